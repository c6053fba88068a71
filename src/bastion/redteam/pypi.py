"""A package index on the lab, so benign scenarios can ``pip install`` like real agents.

The index is a PEP 503 "simple" tree of *real* wheels: the pure-Python and binary
distributions installed beside bastion (pytest and its dependencies, requests and
its dependencies) are repacked from their installed files and ``RECORD`` into wheels,
and Debian's bundled pip/setuptools wheels are copied as they are. No network is
needed to build it. It is served by ``python3 -m http.server`` *inside the lab's
network namespace* on the allowed web host's address, port 8080, so a sandboxed
``pip install --index-url http://allowed.lab.test:8080/simple/ ...`` goes through
bastion's gateway and DNS exactly as a mirror on the internet would.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import html
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from importlib import metadata
from pathlib import Path

from ..gateway.netns import inside
from ..lab import Lab
from ..lab.topology import host

__all__ = ["INDEX_PACKAGES", "INDEX_PORT", "PackageIndex", "index_url"]

INDEX_PORT = 8080
# what the benign scenarios install (with their dependencies)
INDEX_PACKAGES = ("pytest", "pluggy", "iniconfig", "packaging", "pygments", "requests",
                  "urllib3", "idna", "certifi", "charset-normalizer", "pytest-xdist",
                  "execnet", "pytest-timeout", "wheel")
_DEBIAN_WHEELS = Path("/usr/share/python-wheels")


def index_url() -> str:
    return f"http://allowed.lab.test:{INDEX_PORT}/simple/"


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def repack_wheel(name: str, out_dir: Path) -> Path:
    """A wheel of the installed distribution ``name``, rebuilt from its RECORD."""
    dist = metadata.distribution(name)
    wheel_meta = dist.read_text("WHEEL") or ""
    tags = [line.split(":", 1)[1].strip() for line in wheel_meta.splitlines()
            if line.startswith("Tag:")]
    if not tags:
        raise RuntimeError(f"{name}: installed without a WHEEL file; cannot repack")
    parts = [t.split("-") for t in tags]
    tag = "-".join(".".join(dict.fromkeys(p[i] for p in parts)) for i in range(3))
    dist_name = re.sub(r"[-.]+", "_", dist.metadata["Name"])
    target = out_dir / f"{dist_name}-{dist.version}-{tag}.whl"
    if target.exists():
        return target
    files = [f for f in (dist.files or [])
             if not str(f).startswith("..") and "__pycache__" not in str(f)
             and not str(f).endswith((".pyc", "/RECORD", "/INSTALLER", "/REQUESTED",
                                      "/direct_url.json"))]
    record_name = next(str(f) for f in (dist.files or []) if str(f).endswith(".dist-info/RECORD"))
    rows: list[list[str]] = []
    tmp = target.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for entry in files:
            data = Path(dist.locate_file(entry)).read_bytes()
            zf.writestr(str(entry), data)
            rows.append([str(entry), _record_hash(data), str(len(data))])
        rows.append([record_name, "", ""])
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        zf.writestr(record_name, buf.getvalue())
    tmp.rename(target)
    return target


def build_index(root: Path, packages: tuple[str, ...] = INDEX_PACKAGES) -> Path:
    """Write ``root/simple/<project>/index.html`` for every wheel; return ``root``."""
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    wheels = [repack_wheel(name, files) for name in packages]
    for whl in sorted(_DEBIAN_WHEELS.glob("*.whl")) if _DEBIAN_WHEELS.is_dir() else []:
        dest = files / whl.name
        if not dest.exists():
            shutil.copyfile(whl, dest)
        wheels.append(dest)
    projects: dict[str, list[Path]] = {}
    for whl in wheels:
        projects.setdefault(_normalise(whl.name.split("-", 1)[0]), []).append(whl)
    simple = root / "simple"
    simple.mkdir(exist_ok=True)
    links = []
    for project, items in sorted(projects.items()):
        (simple / project).mkdir(exist_ok=True)
        body = "".join(
            f'<a href="../../files/{html.escape(w.name)}#sha256='
            f'{hashlib.sha256(w.read_bytes()).hexdigest()}">{html.escape(w.name)}</a><br>\n'
            for w in items)
        (simple / project / "index.html").write_text(
            f"<!DOCTYPE html><html><body>\n{body}</body></html>\n")
        links.append(f'<a href="{project}/">{project}</a><br>')
    (simple / "index.html").write_text(
        "<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n")
    os.chmod(root, 0o755)
    return root


class PackageIndex:
    """The index served in ``lab``'s namespace; a context manager that stops it."""

    def __init__(self, lab: Lab, root: Path) -> None:
        self.lab = lab
        self.root = root
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PackageIndex:
        build_index(self.root)
        address = host("allowed").ip
        with inside(self.lab.netns_path), open(self.root / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "http.server", "--bind", address,
                 "--directory", str(self.root), str(INDEX_PORT)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("the lab package index did not start: "
                                   + (self.root / "server.log").read_text(errors="replace"))
            if self._ready(address):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("the lab package index did not answer within 10 s")

    def _ready(self, address: str) -> bool:
        with inside(self.lab.netns_path):
            try:
                with urllib.request.urlopen(f"http://{address}:{INDEX_PORT}/simple/",
                                            timeout=1) as resp:
                    return resp.status == 200
            except OSError:
                return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def __enter__(self) -> PackageIndex:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
