"""From an image reference to an unpacked, verified root filesystem, once per image.

The cache lives in ``<state>/images`` (root only, 0700):

    blobs of imported archives   imports/<key>/           (skopeo's OCI layout output)
    unpacked layer stacks        rootfs/<key>/rootfs      (umoci raw unpack)
    reference -> stack           refs/<sha256 of path, tag and file identity>.json

``<key>`` is the ChainID construction over the image's layer blob digests, so two
images with the same layers share one unpacked tree, and a tree is only ever reached
through digests bastion verified itself. Unpacking goes to ``rootfs/.partial-*`` and
is renamed into place when complete: a failed or interrupted unpack never leaves a
half-written entry under its key. Sessions only read these trees (through an overlay).

Real tools do the format work: ``skopeo`` turns a ``docker save`` archive, an OCI
archive or a local container store into an OCI layout; ``umoci`` applies the layers
(whiteouts, hard links, ownership) safely. bastion checks digests, sizes and media
types before either runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import ImageCorrupt, ImageError, ImageNotFound, ImageUnsupported
from .oci import ImageConfig, LayoutImage, layout_stamp, read_layout

__all__ = ["Image", "ImageCache", "hold_entry", "parse_reference"]

# transports handed to skopeo as they are; a bare path is sniffed (see parse_reference)
_SKOPEO_TRANSPORTS = ("docker-archive:", "oci-archive:", "containers-storage:",
                      "docker-daemon:", "docker://")
# a registry is only "local" on the loopback: bastion does not pull from remote ones
_LOCAL_REGISTRIES = ("localhost", "127.0.0.1", "[::1]")
_TOOL_TIMEOUT = 600.0
_IMPORT_GRACE = 2 * _TOOL_TIMEOUT  # seconds an import is kept for the unpack that needs it


@dataclass(frozen=True)
class Image:
    """An image ready for sessions: its unpacked tree and the config calls run with."""

    reference: str
    key: str  # sha256:<hex> over the layer blob digests
    rootfs: Path  # read-only lower layer; never written by sessions
    config: ImageConfig
    manifest_digest: str
    unpack_seconds: float = 0.0  # 0.0 when the tree was already in the cache


@dataclass(frozen=True)
class _Ref:
    kind: str  # "layout" | "skopeo"
    path: Path | None  # the layout directory or archive file, when the source is a path
    tag: str | None
    source: str  # skopeo source for kind == "skopeo"


def parse_reference(ref: str) -> _Ref:
    """Accepted: ``oci:DIR[:TAG]``, ``DIR[:TAG]`` (an OCI layout), an archive path
    (``docker save`` or OCI archive), and skopeo's local transports spelled out
    (``docker-archive:``, ``oci-archive:``, ``containers-storage:``, ``docker-daemon:``,
    and ``docker://`` for a registry on the loopback). Pulls from remote registries are
    not bastion's job: fetch with ``skopeo copy`` first."""
    if not ref:
        raise ImageNotFound("empty image reference")
    if ref.startswith("oci:"):
        path, tag = _split_tag(ref[4:])
        return _Ref("layout", path, tag, ref)
    for transport in _SKOPEO_TRANSPORTS:
        if ref.startswith(transport):
            rest = ref[len(transport):]
            path = None
            if transport == "docker://":
                host = rest.split("/", 1)[0].rsplit(":", 1)[0] if not rest.startswith("[") \
                    else rest.split("]", 1)[0] + "]"
                if host not in _LOCAL_REGISTRIES:
                    raise ImageUnsupported(
                        f"image {ref!r}: bastion reads local registries only (localhost); "
                        "fetch a remote image with `skopeo copy` into an OCI layout first")
            if transport.endswith("archive:"):
                path = Path(rest.split(":", 1)[0]).absolute()
                if not path.is_file():
                    raise ImageNotFound(f"image {ref!r}: no archive at {path}")
            return _Ref("skopeo", path, None, ref)
    path, tag = _split_tag(ref)
    if path.is_dir():
        return _Ref("layout", path, tag, ref)
    if path.is_file() and tag is None:
        return _Ref("skopeo", path, None, "")  # sniffed at import time
    raise ImageNotFound(
        f"no image at {ref!r}: bastion takes an OCI layout directory, a `docker save` "
        "archive or an OCI archive on this machine (it does not pull from registries; "
        "fetch the image with `skopeo copy` first)"
    )


def _split_tag(spec: str) -> tuple[Path, str | None]:
    path = Path(spec)
    if not path.exists() and ":" in spec:
        head, _, tag = spec.rpartition(":")
        if tag and "/" not in tag:
            return Path(head).absolute(), tag
    return path.absolute(), None


def _run_tool(argv: list[str], what: str) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=_TOOL_TIMEOUT, check=False)
    except FileNotFoundError:
        raise ImageError(f"{argv[0]} is not installed (apt-get install skopeo umoci)") from None
    except subprocess.TimeoutExpired:
        raise ImageError(f"{what}: {argv[0]} did not finish in {_TOOL_TIMEOUT:.0f}s") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).decode(errors="replace").strip()
        raise ImageCorrupt(f"{what}: {argv[0]} failed: {detail[-2000:]}")


class ImageCache:
    """Content-addressed store of unpacked images under a state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._mu = threading.Lock()
        self._memo: dict[str, Image] = {}
        root.mkdir(parents=True, exist_ok=True)
        for sub in ("imports", "rootfs", "refs", "locks"):
            (root / sub).mkdir(exist_ok=True)
        os.chmod(root, 0o700)

    # -- public -----------------------------------------------------------------------

    def resolve(self, reference: str | os.PathLike[str]) -> Image:
        """The unpacked image for a reference, unpacking it on first use."""
        ref_text = os.fspath(reference)
        ref = parse_reference(ref_text)
        stamp = self._stamp(ref)
        with self._mu:
            hit = self._memo.get(stamp)
        if hit is not None and hit.rootfs.is_dir():
            return hit
        image = self._from_ref_file(ref_text, stamp)
        if image is None:
            layout, tag = self._layout_of(ref, stamp)
            found = read_layout(layout, tag)
            image = self._unpack(ref_text, found)
            self._write_ref(stamp, image)
        with self._mu:
            self._memo[stamp] = dataclasses.replace(image, unpack_seconds=0.0)
        return image

    def entries(self) -> list[str]:
        """Keys of complete cache entries."""
        return sorted("sha256:" + p.name for p in (self.root / "rootfs").iterdir()
                      if not p.name.startswith("."))

    def prune(self, keep: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """Remove unpacked entries no session uses (keys in ``keep`` stay), and imported
        archives older than the longest import + unpack. Returns the keys removed. An entry is taken out of its key first (renamed), so a session
        starting meanwhile unpacks afresh rather than reading a tree being removed."""
        removed = []
        for key in self.entries():
            if key in keep:
                continue
            hexkey = key.split(":", 1)[1]
            with open(self.root / "locks" / f"{hexkey}.lock", "w") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a session reads it, or it is being unpacked
                entry = self.root / "rootfs" / hexkey
                doomed = self.root / "rootfs" / f".partial-{hexkey}-pruned-{secrets.token_hex(4)}"
                os.rename(entry, doomed)
            _remove_tree(doomed)
            removed.append(key)
        # imported archives are only read while their first unpack runs: drop the ones
        # not touched for a while (an import in flight is fresh)
        for imported in (self.root / "imports").iterdir():
            with contextlib.suppress(OSError):
                if time.time() - imported.stat().st_mtime > _IMPORT_GRACE:
                    _remove_tree(imported)
        with self._mu:
            self._memo = {k: v for k, v in self._memo.items() if v.key not in removed}
        return removed

    # -- reference bookkeeping --------------------------------------------------------

    def _stamp(self, ref: _Ref) -> str:
        """Identifies a reference's current content cheaply (no hashing of blobs)."""
        if ref.kind == "layout" and ref.path is not None:
            try:
                ident = layout_stamp(ref.path)
            except OSError:
                raise ImageNotFound(f"{ref.path} is not an OCI image layout "
                                    "(no index.json)") from None
            text = f"layout\0{ref.path.resolve()}\0{ref.tag}\0{ident}"
        elif ref.path is not None:
            st = os.stat(ref.path)
            text = f"file\0{ref.path.resolve()}\0{ref.source}\0{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
        else:
            text = f"store\0{ref.source}\0{time.time() // 60}"  # a store can change any time
        return hashlib.sha256(text.encode()).hexdigest()

    def _from_ref_file(self, reference: str, stamp: str) -> Image | None:
        try:
            doc = json.loads((self.root / "refs" / f"{stamp}.json").read_text())
        except (OSError, ValueError):
            return None
        rootfs = self.root / "rootfs" / doc["key"].split(":", 1)[1] / "rootfs"
        if not rootfs.is_dir():
            return None
        c = doc["config"]
        return Image(reference, doc["key"], rootfs,
                     ImageConfig(user=c["user"], workdir=c["workdir"], env=c["env"]),
                     doc["manifest"])

    def _write_ref(self, stamp: str, image: Image) -> None:
        path = self.root / "refs" / f"{stamp}.json"
        tmp = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
        tmp.write_text(json.dumps({"key": image.key, "manifest": image.manifest_digest,
                                   "config": image.config.to_json(),
                                   "reference": image.reference}))
        os.replace(tmp, path)

    # -- import: anything skopeo reads becomes an OCI layout ---------------------------

    def _layout_of(self, ref: _Ref, stamp: str = "") -> tuple[Path, str | None]:
        if ref.kind == "layout":
            assert ref.path is not None
            return ref.path, ref.tag
        sources = [ref.source] if ref.source else [f"docker-archive:{ref.path}",
                                                  f"oci-archive:{ref.path}"]
        # named by the source *and* its stamp (file identity): a changed archive is a new
        # import, and an import in use is never replaced under a reader
        name = hashlib.sha256("\0".join([*sources, stamp]).encode()).hexdigest()[:32]
        dest = self.root / "imports" / name
        if stamp and (dest / "index.json").is_file():
            return dest, "image"
        errors = []
        for source in sources:
            tmp = self.root / "imports" / f".partial-{name}-{secrets.token_hex(4)}"
            try:
                _run_tool(["skopeo", "--insecure-policy", "copy", "--quiet", source,
                           f"oci:{tmp}:image"], f"importing {source}")
            except ImageError as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                errors.append(str(exc))
                continue
            try:
                os.rename(tmp, dest)
            except OSError:  # another process imported the same source meanwhile
                shutil.rmtree(tmp, ignore_errors=True)
                if not (dest / "index.json").is_file():
                    raise
            return dest, "image"
        what = ref.source or str(ref.path)
        raise ImageUnsupported(f"{what} is not an image bastion can read ("
                               + "; ".join(errors) + ")")

    # -- unpack -----------------------------------------------------------------------

    def _unpack(self, reference: str, found: LayoutImage) -> Image:
        key = found.cache_key
        hexkey = key.split(":", 1)[1]
        entry = self.root / "rootfs" / hexkey
        image = Image(reference, key, entry / "rootfs", found.config, found.manifest_digest)
        if entry.is_dir():
            return image
        with open(self.root / "locks" / f"{hexkey}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one unpack per key, across processes
            if entry.is_dir():
                return image
            for stale in (self.root / "rootfs").glob(f".partial-{hexkey}-*"):
                _remove_tree(stale)  # a crashed unpack of ours (we hold the lock)
            start = time.monotonic()
            found.verify_layers()  # digest and size of every layer, before unpacking
            layout, tag = found.layout, found.tag
            if tag is None:  # umoci unpacks by tag: give the sole manifest one
                layout, tag = self._layout_of(_Ref("skopeo", None, None, f"oci:{layout}"),
                                              found.manifest_digest)
            partial = self.root / "rootfs" / f".partial-{hexkey}-{secrets.token_hex(4)}"
            try:
                partial.mkdir()
                _run_tool(["umoci", "raw", "unpack", "--image", f"{layout}:{tag}",
                           str(partial / "rootfs")], f"unpacking {reference}")
                (partial / "image.json").write_text(json.dumps({
                    "key": key, "manifest": found.manifest_digest,
                    "config": found.config.to_json(), "reference": reference}))
                os.chmod(partial, 0o700)
                os.rename(partial, entry)
            except BaseException:
                _remove_tree(partial)
                raise
        return Image(reference, key, entry / "rootfs", found.config, found.manifest_digest,
                     unpack_seconds=time.monotonic() - start)


def _remove_tree(path: Path) -> None:
    """Remove an unpacked tree; images may carry read-only directories."""

    def onerror(func: object, p: str, exc: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, 0o700)
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.unlink(p)

    if path.exists():
        shutil.rmtree(path, onerror=onerror)


def hold_entry(image: Image) -> int:
    """Mark an image's cache entry in use: a shared lock, held by each session whose
    overlay reads it and released by closing the returned fd; ``prune`` skips it."""
    images_root = image.rootfs.parents[2]  # <images>/rootfs/<hex>/rootfs
    hexkey = image.key.split(":", 1)[1]
    fd = os.open(images_root / "locks" / f"{hexkey}.lock",
                 os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd
