"""A small real task image, built locally with umoci from busybox-static: for the
demo, the benchmark and the tests. Nothing is downloaded."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["BUSYBOX", "busybox_rootfs", "docker_archive", "oci_layout"]

BUSYBOX = "/bin/busybox"


def _run(*argv: str | Path) -> None:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} {argv[1]} failed: "
                           f"{proc.stderr.decode(errors='replace').strip()}")


def busybox_rootfs(root: Path) -> Path:
    """A root filesystem with busybox (sh, ls, cat, sed, ...) and no Python."""
    if not os.path.exists(BUSYBOX):
        raise RuntimeError("busybox-static is not installed (make bootstrap)")
    (root / "bin").mkdir(parents=True)
    for d in ("etc", "root", "tmp", "var/tmp", "usr/bin", "opt"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    names = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True,
                           check=True).stdout.split()
    for name in names:
        if name != "busybox" and not (root / "bin" / name).exists():
            os.symlink("busybox", root / "bin" / name)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    return root


def oci_layout(layout: Path, tag: str, layers: list[Path], *, workdir: str = "",
               env: list[str] | tuple[str, ...] = ()) -> Path:
    """An OCI image layout with one layer per directory tree, in order (umoci)."""
    if not (layout / "oci-layout").exists():
        _run("umoci", "init", "--layout", layout)
    _run("umoci", "new", "--image", f"{layout}:{tag}")
    for tree in layers:
        _run("umoci", "insert", "--image", f"{layout}:{tag}", tree, "/")
    config: list[str | Path] = ["umoci", "config", "--image", f"{layout}:{tag}"]
    if workdir:
        config += ["--config.workingdir", workdir]
    for item in env:
        config += ["--config.env", item]
    if len(config) > 4:
        _run(*config)
    _run("umoci", "gc", "--layout", layout)
    return layout


def docker_archive(layout: Path, tag: str, archive: Path) -> Path:
    """The same image as `docker save` writes it (skopeo)."""
    _run("skopeo", "--insecure-policy", "copy", "--quiet", f"oci:{layout}:{tag}",
         f"docker-archive:{archive}:bastion-sample/{tag}:latest")
    return archive
