"""TLS inspection: the gateway terminates a sandbox's TLS and reads what it carries.

Without it, TLS to an allowed name is opaque: an attacker's relay on that name can
carry a ``CONNECT`` to a forbidden sshd or pool, and a forwarder that re-chunks its
bytes defeats the burst-shape rule (``shape.py``). With ``network.tls_inspect`` on,
the gateway does what corporate egress proxies do:

* it answers the sandbox's handshake with a leaf certificate for the SNI (or the
  address, without SNI) minted by an interception CA made in this process
  (``authority()``: one per gateway process, its private key only ever in this
  process's memory; leaves cached per name);
* it dials the real server with TLS, verifying it (the system trust store, the lab's
  CA for lab sessions, any CA files the policy names), ALPN ``http/1.1`` only on both
  sides, so what flows is HTTP/1.1 the stream inspector can frame;
* the plaintext goes through the same whole-stream ``Inspector`` as clear text.

A client that does not trust the interception CA (it pins its own CA or certificate)
fails its handshake: nothing is dialled with TLS, nothing reaches the server, and the
refusal is recorded. Fail closed.

``TlsPipe`` is TLS over a blocking socket through memory BIOs: the ClientHello the
gateway already read to classify the connection is fed in first, and the reading and
writing relay threads share one TLS object under a lock held only for the (non-
blocking) TLS calls, never for socket I/O.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import select
import socket
import ssl
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .sniff import Sniff, classify
from .stream import Finding, Inspector, scan

__all__ = ["ALPN", "Authority", "InboundInspector", "LazyInspector", "TlsPipe", "authority", "bundle_text",
           "system_bundle", "upstream_context"]

ALPN = ["http/1.1"]
_LEAF_CACHE = 1024  # names whose leaf context is kept
_LEAF_DAYS = 7
_SYSTEM_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
                   "/etc/ssl/cert.pem", "/etc/ssl/ca-bundle.pem")
_READ = 64 * 1024


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common[:64]),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bastion gateway")])


class Authority:
    """The interception CA of one gateway process, and the leaf certificates it mints.

    The CA's key is made here and never written anywhere; a leaf's key is written to a
    private file only for as long as ``ssl`` takes to load it."""

    def __init__(self) -> None:
        now = datetime.datetime.now(datetime.UTC)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.subject = _name(f"bastion interception CA {os.getpid()}")
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.subject).issuer_name(self.subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()),
                           critical=False)
            .sign(self._key, hashes.SHA256()))
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM).decode()
        self._leaves: OrderedDict[str, ssl.SSLContext] = OrderedDict()
        self._lock = threading.Lock()
        self.minted = 0  # leaves made (the cache's misses)

    def leaf(self, name: str) -> x509.Certificate:
        """A fresh server certificate for ``name`` (a DNS name or an address)."""
        return self._mint(name)[0]

    def _mint(self, name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        try:
            alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
        except ValueError:
            alt = x509.DNSName(name)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name)).issuer_name(self.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=_LEAF_DAYS))
            .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256()))
        self.minted += 1
        return cert, key

    def server_context(self, name: str) -> ssl.SSLContext:
        """The server-side context presenting a leaf for ``name`` (cached per name:
        minting costs a key generation and a signature)."""
        name = name.lower().rstrip(".")
        with self._lock:
            context = self._leaves.get(name)
            if context is not None:
                self._leaves.move_to_end(name)
                return context
        cert, key = self._mint(name)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(ALPN)
        chain = (cert.public_bytes(serialization.Encoding.PEM)
                 + self.cert.public_bytes(serialization.Encoding.PEM))
        secret = key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())
        # ssl loads keys from files only: a private directory, removed at once
        with tempfile.TemporaryDirectory(prefix="bst-leaf-") as tmp:
            cert_path, key_path = Path(tmp) / "leaf.pem", Path(tmp) / "leaf.key"
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(secret)
            cert_path.write_bytes(chain)
            context.load_cert_chain(cert_path, key_path)
        with self._lock:
            self._leaves[name] = context
            while len(self._leaves) > _LEAF_CACHE:
                self._leaves.popitem(last=False)
        return context


_authority: Authority | None = None
_authority_lock = threading.Lock()


def authority() -> Authority:
    """This process's interception CA (made on first use)."""
    global _authority
    with _authority_lock:
        if _authority is None:
            _authority = Authority()
        return _authority


def system_bundle() -> str:
    """The host's CA bundle (PEM text), or "" when it has none we know of."""
    for path in _SYSTEM_BUNDLES:
        with contextlib.suppress(OSError):
            return Path(path).read_text()
    return ""


def bundle_text(*extra: str) -> str:
    """A trust bundle: the system's, then each PEM in ``extra`` (the interception CA,
    a lab CA), each ending with a newline."""
    parts = [system_bundle(), *extra]
    return "".join(p if p.endswith("\n") else p + "\n" for p in parts if p)


def upstream_context(ca_files: Iterable[str]) -> ssl.SSLContext:
    """The client context for the real server: verified against the system trust store
    and ``ca_files``, host name checked, ALPN http/1.1."""
    context = ssl.create_default_context()
    for path in ca_files:
        context.load_verify_locations(cafile=path)
    context.set_alpn_protocols(ALPN)
    return context


class TlsPipe:
    """TLS over a blocking socket, through memory BIOs (see the module docstring)."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, *, server_side: bool,
                 first: bytes = b"", server_hostname: str | None = None) -> None:
        self.sock = sock
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_side=server_side,
                                     server_hostname=server_hostname)
        if first:
            self._in.write(first)
        self._lock = threading.Lock()  # the TLS object (calls that never block)
        self._send = threading.Lock()  # records leave in the order they were made
        self._closed = False

    def _flush(self) -> None:
        with self._send:
            with self._lock:
                data = self._out.read()
            if data:
                self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(_READ)
        with self._lock:
            if data:
                self._in.write(data)
            else:
                self._in.write_eof()
        return bool(data)

    def handshake(self, timeout: float) -> None:
        """Complete the handshake (raises ``ssl.SSLError``/``OSError`` on failure)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                try:
                    with self._lock:
                        self._obj.do_handshake()
                    self._flush()
                    return
                except ssl.SSLWantReadError:
                    self._flush()
                if not self._fill():
                    raise ConnectionError("the peer closed the connection during the handshake")
        finally:
            with contextlib.suppress(OSError):
                self.sock.settimeout(None)

    def readable(self, timeout: float) -> bool:
        """Whether plaintext or ciphertext is waiting, or arrives within ``timeout``."""
        with self._lock:
            if self._obj.pending() or self._in.pending:
                return True
        ready, _, _ = select.select([self.sock], [], [], timeout)
        return bool(ready)

    @property
    def alpn(self) -> str | None:
        return self._obj.selected_alpn_protocol()

    def recv_into(self, buffer: bytearray) -> int:
        """Plaintext into ``buffer``; 0 at the end of the stream (clean or not)."""
        while True:
            try:
                with self._lock:
                    n = self._obj.read(len(buffer), buffer)
                pending = True
            except ssl.SSLWantReadError:
                n, pending = -1, True
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return 0
            if pending:
                self._flush()  # what reading produced (tickets, key updates)
            if n >= 0:
                return n
            if not self._fill():
                continue  # EOF fed in: the next read reports it

    def sendall(self, data: bytes | memoryview) -> None:
        with self._send:
            with self._lock:
                self._obj.write(data)
                out = self._out.read()
            self.sock.sendall(out)

    def close_write(self) -> None:
        """Say close_notify and end our direction (a client reading to the end of the
        stream must see a clean TLS end, or OpenSSL 3 calls it an error)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(ssl.SSLError, ValueError), self._lock:
            self._obj.unwrap()
        with contextlib.suppress(OSError):
            self._flush()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)


class LazyInspector:
    """The outbound inspector of an intercepted connection, chosen by what the
    plaintext turns out to be: HTTP/1.x is framed request by request and each request
    judged (``judge``, the first one included); anything else is scanned whole-stream
    (miners, SSH, CONNECT anywhere; a SOCKS or proxy handshake first) like clear text.
    ``http`` says which, once known (None before).

    Until then nothing is forwarded: the first bytes are held (a proxy handshake sent
    a few bytes at a time must not reach a server that acts on a partial line), and
    ``settle`` decides on what was held when the client pauses. ``take`` gives what
    may be forwarded now."""

    def __init__(self, judge: Callable[[Sniff], Finding | None]) -> None:
        self._judge = judge
        self._first = b""
        self._out: bytes | memoryview = b""
        self._inner: Inspector | None = None
        self.http: bool | None = None

    @property
    def undecided(self) -> bool:
        return self._inner is None

    def feed(self, data: bytes | memoryview) -> Finding | None:
        if self._inner is not None:
            self._out = data
            return self._inner.feed(data)
        self._first += bytes(data)
        sniff = classify(self._first, final=len(self._first) >= 512)
        return self._decide(sniff) if sniff is not None else scan(self._first)

    def settle(self) -> Finding | None:
        """Decide on the bytes held so far (the client paused: no more are coming)."""
        if self._inner is not None:
            return None
        return self._decide(classify(self._first, final=True) or Sniff("unknown"))

    def _decide(self, sniff: Sniff) -> Finding | None:
        self.http = sniff.app in ("http", "http-connect")
        if self.http:
            self._inner = Inspector(http=True, judge=self._judge, judge_first=True)
        else:
            self._inner = Inspector(classify_first=True)
        first, self._first = self._first, b""
        self._out = first
        return self._inner.feed(first)

    def take(self) -> bytes | memoryview:
        """What may be forwarded after the last feed (nothing while undecided)."""
        if self._inner is None:
            return b""
        out, self._out = self._out, b""
        return out


class InboundInspector:
    """The server's side of an intercepted connection: not inspected once the client
    speaks HTTP (what a web server answers cannot make an allowed request forbidden, and
    a download may well contain these words), scanned whole-stream otherwise."""

    def __init__(self, outbound: LazyInspector) -> None:
        self._outbound = outbound
        self._inner = Inspector()

    def feed(self, data: bytes | memoryview) -> Finding | None:
        if self._outbound.http:
            return None
        return self._inner.feed(data)
