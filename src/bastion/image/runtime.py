"""The supervisor's Python, brought into an image from the host.

Task images may have no Python (node, go, distroless) or a Python too old or too
broken to run the supervisor. An image session therefore runs the supervisor with the
*host's* interpreter, bound read-only at a private path (``/.bastion``): the binary,
its standard library, and the shared libraries it links against, loaded through the
host's own dynamic loader called explicitly (``ld.so --library-path``). Nothing of it
leaks into agent commands: the library path is an argument of the loader, not an
environment variable, and the supervisor's children exec the image's programs with the
image's own loader.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from dataclasses import dataclass

from ..errors import SandboxUnavailable

__all__ = ["RUNTIME_DIR", "SupervisorRuntime", "host_runtime"]

RUNTIME_DIR = "/.bastion"


@dataclass(frozen=True)
class SupervisorRuntime:
    binds: tuple[tuple[str, str], ...]  # (host path, path inside), all read-only
    command: tuple[str, ...]  # argv prefix that starts the interpreter inside


def _libraries(binary: str) -> tuple[str, list[str]]:
    """(dynamic loader, shared libraries) of a binary, as ldd resolves them on the host."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False).stdout
    loader = ""
    libs = []
    for line in out.splitlines():
        m = re.search(r"=>\s+(/\S+)", line)
        if m:
            libs.append(m.group(1))
            continue
        m = re.match(r"\s*(/\S+ld-linux\S*|/\S+ld64\S*)\s", line)
        if m:
            loader = m.group(1)
    return loader, libs


@functools.cache
def host_runtime(interpreter: str = "/usr/bin/python3") -> SupervisorRuntime:
    """The bind list and command for a host interpreter at ``/.bastion``.

    The system interpreter, not bastion's own (which may live in a virtualenv or under
    /root, where the sandbox's uid cannot reach): the same one a plain rootfs session
    runs the supervisor with."""
    probe = ("import sys,sysconfig;print(sys.executable);print(sys.base_prefix);"
             "print(sysconfig.get_paths()['stdlib'])")
    try:
        out = subprocess.run([interpreter, "-I", "-S", "-c", probe], capture_output=True,
                             text=True, check=True, timeout=30).stdout.split("\n")
        exe, base_prefix, stdlib = os.path.realpath(out[0]), out[1], out[2]
    except (OSError, subprocess.SubprocessError, IndexError) as exc:
        raise SandboxUnavailable(f"the supervisor needs {interpreter} on the host "
                                 f"(apt-get install python3-minimal): {exc}") from exc
    loader, libs = _libraries(exe)
    # extension modules (_socket, ctypes' _ctypes, ...) bring their own libraries
    dynload = os.path.join(stdlib, "lib-dynload")
    if os.path.isdir(dynload):
        for name in sorted(os.listdir(dynload)):
            if name.endswith(".so"):
                libs += _libraries(os.path.join(dynload, name))[1]
    libs = list(dict.fromkeys(libs))
    if not loader or not os.path.isdir(stdlib):
        raise SandboxUnavailable(f"cannot find the dynamic loader or standard library of "
                                 f"{exe} to run the supervisor inside an image")
    prefix = base_prefix.rstrip("/") or "/usr"
    version_dir = os.path.relpath(stdlib, prefix)  # lib/python3.11
    inside_exe = f"{RUNTIME_DIR}/usr/bin/python3"
    binds = [(exe, inside_exe), (stdlib, f"{RUNTIME_DIR}/usr/{version_dir}")]
    # whole library directories, not one bind per library: each bind is a mount bwrap
    # makes at every start, and these directories are what a plain rootfs session shows
    # of the host anyway (read-only /usr)
    lib_dirs: list[str] = []
    for lib in [loader, *libs]:
        directory = os.path.dirname(os.path.realpath(lib))
        if directory not in lib_dirs:
            lib_dirs.append(directory)
    inside_dirs = [f"{RUNTIME_DIR}/lib{i}" for i in range(len(lib_dirs))]
    binds += list(zip(lib_dirs, inside_dirs))
    real_loader = os.path.realpath(loader)
    inside_loader = (f"{inside_dirs[lib_dirs.index(os.path.dirname(real_loader))]}/"
                     f"{os.path.basename(real_loader)}")
    # Python finds its prefix from the executable's location (the landmark
    # <prefix>/lib/python3.X/os.py), so the private tree mirrors the host's layout
    command = (inside_loader, "--library-path", ":".join(inside_dirs), inside_exe)
    return SupervisorRuntime(tuple(dict.fromkeys(binds)), command)
