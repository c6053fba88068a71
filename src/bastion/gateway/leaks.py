"""The session's own secrets, recognised in what leaves it.

Command analysis judges how an agent *says* it reads a credential; an agent that
builds the path at run time (``string reverse``, ``glob``, a path read from a list
file) and sends the content through a client the analyser does not model is only seen
where the bytes leave. The gateway reads every byte of a clear-text stream (and of an
inspected TLS one) anyway: it also looks for the secrets the session holds.

What counts as a secret is what the workspace holds in the credential stores of the
shared vocabulary (``credential_paths``: ``~/.aws/credentials``, ``~/.ssh/id_*``,
``~/.netrc``, ``~/.git-credentials``, ``~/.docker/config.json`` ...), read from the host
when a connection is judged (re-read when one of those files changes): each value that
looks like a key (long, varied characters; a PEM body line) becomes a fingerprint.

A secret is recognised however it was spelled on the way out: as is, reversed, in hex
(either case), in base64, URL-safe base64 or base32 (either case) at every byte
alignment (so a whole file encoded at once is matched too), encoded twice, and by overlapping windows so a line-wrapped
encoding (``base64`` wraps at 76) still shows one whole window. Compression and
encryption by the agent are not seen (stated, not hidden: the shape and volume
detectors are what remain for them).

A credential meant for a host (``machine`` in ``.netrc``, the URL of a
``.git-credentials`` line) may go to that host, where its client sends it; every other
secret goes nowhere.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import re
import stat
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import ahocorasick_rs

__all__ = ["Leak", "SecretSet", "Secrets", "fingerprints", "secret_values"]

MIN_SECRET = 16  # bytes: shorter values are not told apart from ordinary text
WINDOW = 16  # bytes of a long secret per fingerprint window (short enough that one
STRIDE = 8  # window sits inside one line of a wrapped encoding: base64 76, xxd -p 60)
MIN_CORE = 16  # characters: the shortest encoded fingerprint kept
MAX_SECRETS = 96
MAX_FILE = 256 * 1024
OVERLAP = 256  # bytes of one chunk kept to match a fingerprint split across reads
RECHECK = 1.0  # seconds between looks at the credential stores' sizes and times

# value separators in credential files: `key = value`, `key: value`, JSON, URLs, netrc
_TOKEN = re.compile(rb"[A-Za-z0-9+/=_\-.~!#$^&*]{16,}")
_URL_CRED = re.compile(rb"[a-z][a-z0-9+.-]*://([^:/@\s]+):([^@\s]+)@([^/:\s]+)", re.I)
_NETRC = re.compile(rb"\bmachine\s+(\S+)(?:(?!\bmachine\b).)*?\bpassword\s+(\S+)", re.S)
_PEM_LINE = re.compile(rb"^[A-Za-z0-9+/=]{40,}$", re.M)
# tokens a package client sends to its own registry or index
_NPMRC = re.compile(rb"^\s*//([^/:\s]+)[^\s=]*:_(?:authToken|auth|password)\s*=\s*(\S+)", re.M)
_DOCKER_AUTH = re.compile(rb'"(?:https?://)?([^"/:]+)[^"]*"\s*:\s*\{\s*"auth"\s*:\s*"([^"]+)"')
_INI_SECTION = re.compile(rb"^\s*\[[^\]]*\]\s*$", re.M)
_INI_REPOSITORY = re.compile(rb"^\s*repository\s*[=:]\s*[a-z][a-z0-9+.-]*://([^/:\s]+)", re.M | re.I)
_INI_PASSWORD = re.compile(rb"^\s*password\s*[=:]\s*(\S+)", re.M | re.I)
# a file path, a URL or a host name in a credential file is where a secret is used
_PATHLIKE = re.compile(rb"^(?:/|~/|\.\.?/)|://|^[\w-]+(?:\.[\w-]+)*\.(?:com|org|net|io|dev|test|local|internal)$")


@dataclass(frozen=True, slots=True)
class Leak:
    """A secret seen in outgoing bytes: which store it came from and how it was spelled."""

    source: str  # workspace-relative credential file
    encoding: str  # raw, reversed, hex, base64, base64url


def _entropy(value: bytes) -> float:
    counts = Counter(value)
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _looks_secret(value: bytes) -> bool:
    """Long, varied, not a path, URL, host name or a word repeated."""
    if len(value) < MIN_SECRET or _PATHLIKE.match(value):
        return False
    classes = sum(bool(re.search(p, value)) for p in (rb"[a-z]", rb"[A-Z]", rb"[0-9]"))
    return classes >= 2 and _entropy(value) >= 3.2  # `credential_process` is a key name


def _private_key_values(text: bytes) -> list[bytes] | None:
    """The private numbers of a PEM or OpenSSH private key (never the public half,
    which the agent may rightly send: a deploy key, ``ssh-copy-id``); None when the
    text is not a key ``cryptography`` can load."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

    loaders = (serialization.load_ssh_private_key, serialization.load_pem_private_key)
    for load in loaders:
        try:
            key = load(text, password=None)
        except Exception:  # noqa: BLE001 - not this format (or encrypted): try the next
            continue
        if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
            return [key.private_bytes_raw()]
        if isinstance(key, rsa.RSAPrivateKey):
            n = key.private_numbers()
            return [_int_bytes(v) for v in (n.d, n.p, n.q)]
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return [_int_bytes(key.private_numbers().private_value)]
        if isinstance(key, dsa.DSAPrivateKey):
            return [_int_bytes(key.private_numbers().x)]
    return None


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")


def secret_values(text: bytes) -> list[tuple[bytes, str | None]]:
    """The secret values in one credential file's text, each with the host it is meant
    for (None: it is meant for no network peer of the sandbox)."""
    found: dict[bytes, str | None] = {}
    if b"PRIVATE KEY-----" in text:
        private = _private_key_values(text)
        if private is not None:
            return [(v, None) for v in private if len(v) >= MIN_SECRET]
    for m in _URL_CRED.finditer(text):
        if _looks_secret(m.group(2)) or len(m.group(2)) >= MIN_SECRET:
            found[m.group(2)] = m.group(3).decode("ascii", "replace").lower()
    for m in _NETRC.finditer(text):
        if len(m.group(2)) >= 8:
            found[m.group(2)] = m.group(1).decode("ascii", "replace").lower()
    bound = [(m.group(2), m.group(1)) for m in _NPMRC.finditer(text)]
    bound += [(m.group(2), m.group(1)) for m in _DOCKER_AUTH.finditer(text)]
    for section in _INI_SECTION.split(text):  # .pypirc: a password for its repository
        repository, password = _INI_REPOSITORY.search(section), _INI_PASSWORD.search(section)
        if repository and password:
            bound.append((password.group(1), repository.group(1)))
    for value, host in bound:
        if len(value) >= 8:
            found[value.strip(b"\"'")] = host.decode("ascii", "replace").lower()
    for m in _PEM_LINE.finditer(text):
        found.setdefault(m.group(), None)
    for m in _TOKEN.finditer(text):
        value = re.sub(rb"^[A-Za-z_][\w.-]*=(?=.)", b"", m.group().strip(b"\"',;"))
        if any(known in value for known in found):
            continue  # a bound value with its key around it (`_authToken=...`)
        if _looks_secret(value):
            found[value] = None
    return list(found.items())


def _b64_cores(data: bytes, urlsafe: bool) -> list[bytes]:
    """The base64 characters that depend only on ``data``, at each of the three byte
    alignments it can have inside a larger encoded text."""
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    cores = []
    for k in range(3):
        enc = encode(b"\0" * k + data)
        start = 4 * math.ceil(k / 3)
        end = 4 * ((k + len(data)) // 3)
        core = enc[start:end]
        if len(core) >= MIN_CORE:
            cores.append(core)
    return cores


def _b32_cores(data: bytes) -> list[bytes]:
    """The base32 characters that depend only on ``data`` at each of five alignments
    (DNS labels and URL paths carry base32: one letter case, no ``+/``)."""
    cores = []
    for k in range(5):
        enc = base64.b32encode(b"\0" * k + data)
        start = 8 * math.ceil(k / 5)
        end = 8 * ((k + len(data)) // 5)
        core = enc[start:end]
        if len(core) >= MIN_CORE:
            cores += [core, core.lower()]
    return cores


def _windows(value: bytes) -> list[bytes]:
    if len(value) <= WINDOW + STRIDE:
        return [value]
    out = [value[i:i + WINDOW] for i in range(0, len(value) - WINDOW + 1, STRIDE)]
    if (len(value) - WINDOW) % STRIDE:
        out.append(value[-WINDOW:])
    return out


def _encodings(piece: bytes) -> list[tuple[bytes, str]]:
    hexed = binascii.hexlify(piece)
    return [(hexed, "hex"), (hexed.upper(), "hex"),
            *((c, "base64") for c in _b64_cores(piece, urlsafe=False)),
            *((c, "base64url") for c in _b64_cores(piece, urlsafe=True)),
            *((c, "base32") for c in _b32_cores(piece))]


def fingerprints(value: bytes) -> list[tuple[bytes, str]]:
    """(pattern, encoding) pairs that recognise ``value`` in a stream: as is, reversed,
    each window in hex and base64, and each base64 window encoded once more (a key
    file is already base64 text: ``base64 < id_rsa`` encodes it a second time)."""
    out: list[tuple[bytes, str]] = [(value, "raw"), (value[::-1], "reversed")]
    for piece in _windows(value):
        if piece is not value:
            out.append((piece, "raw"))
        for text, how in _encodings(piece):
            out.append((text, how))
            if how.startswith("base64"):
                for part in _windows(text):
                    out += [(c, f"{how}, then {again}") for c, again in _encodings(part)]
    seen: dict[bytes, str] = {}
    for pattern, encoding in out:
        if len(pattern) >= MIN_CORE:
            seen.setdefault(pattern, encoding)
    return list(seen.items())


class SecretSet:
    """Fingerprints of a fixed set of secrets, and a matcher over them."""

    def __init__(self, secrets: Iterable[tuple[bytes, str, str | None]]) -> None:
        patterns: list[bytes] = []
        self._meta: list[tuple[str, str, str | None]] = []
        for value, source, host in list(secrets)[:MAX_SECRETS]:
            for pattern, encoding in fingerprints(value):
                patterns.append(pattern)
                self._meta.append((source, encoding, host))
        self._matcher = (ahocorasick_rs.BytesAhoCorasick(patterns) if patterns else None)

    def __bool__(self) -> bool:
        return self._matcher is not None

    def find(self, data: bytes | bytearray | memoryview, host: str | None = None) -> Leak | None:
        """The first secret in ``data`` that may not go to ``host`` (the name the
        connection was allowed for), or None."""
        if self._matcher is None or not data:
            return None
        host = (host or "").lower()
        for index, _start, _end in self._matcher.find_matches_as_indexes(bytes(data),
                                                                         overlapping=True):
            source, encoding, meant = self._meta[index]
            if meant is not None and host and (host == meant or host.endswith("." + meant)):
                continue
            return Leak(source, encoding)
        return None


class StreamLeaks:
    """One direction of one connection: chunks are matched with the tail of the
    previous one, so a fingerprint split across two reads is still found."""

    def __init__(self, secrets: SecretSet, host: str | None) -> None:
        self._secrets = secrets
        self._host = host
        self._tail = b""

    def feed(self, chunk: bytes | bytearray | memoryview) -> Leak | None:
        data = self._tail + bytes(chunk)
        self._tail = data[-OVERLAP:]
        return self._secrets.find(data, self._host)


class Secrets:
    """The secrets of one workspace, read from its credential stores on the host and
    re-read when one of them changes (a task's set-up may write them after the
    session starts). Thread-safe; reading is bounded (regular files only, no links
    followed, ``MAX_FILE`` bytes each)."""

    def __init__(self, workspace: Path, patterns: Iterable[str]) -> None:
        self._workspace = workspace
        self._patterns = [p[2:] for p in patterns if p.startswith("*/")]
        self._lock = threading.Lock()
        self._signature: tuple[tuple[str, int, int], ...] | None = None
        self._set = SecretSet(())
        self._looked = 0.0

    def _files(self) -> list[Path]:
        found: dict[Path, None] = {}
        for pattern in self._patterns:
            if pattern.endswith("*") and "/" not in pattern.rstrip("*"):
                continue  # a bare name prefix (*.pem.key...): not a store's place
            for path in self._workspace.glob(pattern):
                if path.name.endswith(".pub"):
                    continue
                found.setdefault(path)
        return list(found)[:64]

    def current(self) -> SecretSet:
        now = time.monotonic()
        with self._lock:
            if self._signature is not None and now - self._looked < RECHECK:
                return self._set  # looked moments ago (a burst of connects, of queries)
            self._looked = now
        files = self._files()
        signature = []
        for path in files:
            try:
                st = path.lstat()
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                signature.append((str(path), st.st_mtime_ns, st.st_size))
        key = tuple(signature)
        with self._lock:
            if key == self._signature:
                return self._set
        values: list[tuple[bytes, str, str | None]] = []
        for name, _mtime, size in key:
            if size > MAX_FILE:
                continue
            text = _read(Path(name))
            if text is None:
                continue
            rel = os.path.relpath(name, self._workspace)
            values += [(v, rel, host) for v, host in secret_values(text)]
        built = SecretSet(values)
        with self._lock:
            self._signature, self._set = key, built
        return built


def _read(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, MAX_FILE)
    finally:
        os.close(fd)
