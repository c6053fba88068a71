"""Turn a ``SandboxPolicy`` into a bubblewrap command line.

The root of the sandbox is an empty tmpfs onto which top-level entries of the
configured rootfs are bind-mounted read-only (symlinks such as /bin -> usr/bin are
recreated as symlinks). Building the root this way, rather than binding ``/`` whole,
lets bastion create mount points such as ``/workspace`` and leave out host-only trees
by simply not mounting them. When the rootfs is the host's own ``/``, only an allow
list is taken (``HOST_ALLOWED``: the system directories a program needs); /opt, /srv,
/var and anything an operator added stay invisible. A dedicated rootfs (an image) is
taken whole, minus ``_NEVER_BOUND``.

bubblewrap reads its arguments from a file descriptor (``--args``, see
``args_via_fd``), never from its argv: the sandbox's pid 1 is a fork of bwrap, so its
``/proc/1/cmdline`` is visible to the agent, and it must show no host path (the
workspace, the state directory, the masks) to it.
"""

from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import SandboxUnavailable
from ..image.view import image_root_binds, policy_mounts
from ..policy.sandbox import ALWAYS_HIDDEN, SandboxPolicy

__all__ = [
    "HOST_ALLOWED",
    "SANDBOX_GID",
    "SANDBOX_UID",
    "WORKSPACE",
    "BwrapSpec",
    "args_via_fd",
    "build_argv",
    "bwrap_path",
]

WORKSPACE = "/workspace"
SANDBOX_UID = 1000  # uid *inside* the sandbox; on the host it is a per-session uid
SANDBOX_GID = 1000

# Top-level trees never taken from the rootfs: bastion provides its own (proc, dev,
# tmp) or they belong to the host only.
_NEVER_BOUND = {"proc", "dev", "tmp", "run", "var", "sys", "root", "home", "workspace",
                "lost+found", "mnt", "media", "boot", "snap"}
# What a session sees of the host when the rootfs is "/": programs, libraries, /etc
# (minus the secrets in ALWAYS_HIDDEN). Nothing else of the host.
HOST_ALLOWED = frozenset({"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc"})
# Inside /sys only what ordinary programs read (CPU topology, devices) is useful;
# these parts describe or control the host and are masked.
_SYS_MASKED = ("/sys/fs/cgroup", "/sys/fs/bpf", "/sys/kernel/debug", "/sys/kernel/security",
               "/sys/kernel/tracing", "/sys/fs/fuse", "/sys/firmware")


@functools.cache
def bwrap_path() -> str:
    path = shutil.which("bwrap")
    if path is None:
        raise SandboxUnavailable(
            "bubblewrap is not installed: run `make demo` or `apt-get install bubblewrap`"
        )
    return path


@dataclass(frozen=True)
class BwrapSpec:
    """Everything about one sandbox that is not in the policy."""

    workspace: Path  # host directory mounted read-write at /workspace
    state_dir: Path  # bastion's state; masked whatever the policy says
    info_fd: int
    block_fd: int
    seccomp_fd: int
    extra_hidden: tuple[str, ...] = ()
    own_netns: bool = True  # False: stay in the netns the launcher joined (gateway)
    # host directory whose subdirectories (scratch.SCRATCH_DIRS) become /tmp, /var/tmp
    # and /dev/shm: a size-limited tmpfs; None: bwrap's own tmpfs of tmp_size bytes
    scratch: Path | None = None
    tmp_size: int | None = None
    # an image session (bastion.image): the rootfs is the session's writable overlay,
    # bound read-write with the image's own /root, /home, /var; ro_binds add the
    # supervisor's runtime at a private path
    image_root: bool = False
    ro_binds: tuple[tuple[str, str], ...] = ()


def _root_entries(rootfs: str) -> list[tuple[str, str | None]]:
    """(name, symlink target or None) for each top-level entry of the rootfs."""
    entries = []
    for name in sorted(os.listdir(rootfs)):
        if name in _NEVER_BOUND or (rootfs == "/" and name not in HOST_ALLOWED):
            continue
        full = os.path.join(rootfs, name)
        if os.path.islink(full):
            entries.append((name, os.readlink(full)))
        elif os.path.isdir(full):
            entries.append((name, None))
    return entries


@functools.lru_cache(maxsize=8)
def _cached_root_entries(rootfs: str) -> tuple[tuple[str, str | None], ...]:
    return tuple(_root_entries(rootfs))


def _bind(spec: BwrapSpec, host: str, inside: str, *, writable: bool) -> list[str]:
    # bwrap resolves bind sources as the sandbox uid (even --bind-fd goes through the
    # path), which is why StateDir insists that its parents are traversable
    return ["--bind" if writable else "--ro-bind", host, inside]


def _resolve_inside(path: str) -> str:
    """Policy paths are inside-sandbox paths; relative ones are relative to /workspace."""
    if path.startswith("./") or not path.startswith("/"):
        return os.path.normpath(os.path.join(WORKSPACE, path))
    return os.path.normpath(path)


def build_argv(policy: SandboxPolicy, spec: BwrapSpec, command: list[str]) -> list[str]:
    rootfs = os.path.realpath(policy.rootfs)
    if not os.path.isdir(rootfs):
        raise SandboxUnavailable(f"sandbox.rootfs {policy.rootfs!r} is not a directory")
    argv = [
        bwrap_path(),
        "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
        *(["--unshare-net"] if spec.own_netns else []),
        "--unshare-cgroup",
        "--disable-userns",
        "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID),
        "--hostname", policy.hostname,
        "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        "--tmpfs", "/",
    ]
    for name, target in _cached_root_entries(rootfs):
        if target is not None:
            argv += ["--symlink", target, f"/{name}"]
        else:
            argv += ["--bind" if spec.image_root else "--ro-bind", os.path.join(rootfs, name),
                     f"/{name}"]
    if spec.image_root:
        argv += image_root_binds(rootfs)
    # /var: the host's is not shown (it holds other programs' data); a dedicated rootfs's
    # is, read-only, with the writable and host-specific parts replaced
    var = os.path.join(rootfs, "var")
    if rootfs != "/" and os.path.isdir(var) and not spec.image_root:
        argv += ["--ro-bind", var, "/var"]
        for sub in ("run", "log", "lock"):
            full = os.path.join(var, sub)
            if os.path.isdir(full) and not os.path.islink(full):
                argv += ["--tmpfs", f"/var/{sub}"]
    else:
        argv += ["--dir", "/var"]
    argv += ["--ro-bind", "/sys", "/sys"]
    for masked in _SYS_MASKED:
        if os.path.isdir(masked):
            argv += ["--tmpfs", masked]
    argv += ["--dev", "/dev", "--proc", "/proc"]
    if spec.scratch is not None:
        for sub, inside in (("tmp", "/tmp"), ("var-tmp", "/var/tmp"), ("shm", "/dev/shm")):
            if inside == "/var/tmp" and rootfs != "/" and not os.path.isdir(var + "/tmp"):
                continue  # a read-only /var without tmp: no mount point to bind onto
            argv += ["--bind", str(spec.scratch / sub), inside]
    else:
        size = ["--size", str(spec.tmp_size)] if spec.tmp_size else []
        for inside in ("/tmp", "/var/tmp", "/dev/shm"):
            if inside == "/var/tmp" and rootfs != "/" and not os.path.isdir(var + "/tmp"):
                continue
            argv += [*size, "--tmpfs", inside]
    argv += [
        "--dir", "/run", "--dir", "/home",
        *_bind(spec, str(spec.workspace), WORKSPACE, writable=True),
    ]
    # sandbox.mounts before the masks and protected paths, which therefore win over them
    argv += policy_mounts(policy, spec.state_dir)
    # hidden paths: masked by an empty tmpfs (directories) or /dev/null (files)
    bound = {name for name, target in _cached_root_entries(rootfs) if target is None} | {"sys"}
    if rootfs != "/" and os.path.isdir(var):
        bound.add("var")
    state = str(spec.state_dir)
    hidden = list(dict.fromkeys([*ALWAYS_HIDDEN, *policy.hidden, *spec.extra_hidden, state]))
    for path in hidden:
        inside = _resolve_inside(path)
        top = inside.strip("/").split("/", 1)[0]
        if top not in bound:
            continue  # never mounted in the first place
        host_path = os.path.join(rootfs, inside.lstrip("/"))
        if inside == "/" or not os.path.exists(host_path) or os.path.islink(host_path):
            continue  # nothing there to hide (a symlink points at something masked already)
        if os.path.isdir(os.path.join(rootfs, inside.lstrip("/"))):
            argv += ["--tmpfs", inside, "--remount-ro", inside]
        else:
            argv += ["--ro-bind", "/dev/null", inside]
    for path in policy.protected:
        inside = _resolve_inside(path)
        if inside.startswith(WORKSPACE + "/") or inside == WORKSPACE:
            host = os.path.join(str(spec.workspace), os.path.relpath(inside, WORKSPACE))
        else:
            host = os.path.join(rootfs, inside.lstrip("/"))
        if os.path.lexists(host):
            argv += _bind(spec, host, inside, writable=False)
        else:
            # protect the name even if it does not exist yet: nothing can be created there
            argv += ["--ro-bind", "/dev/null", inside] if inside.startswith(WORKSPACE) else []
    for host_path, inside in spec.ro_binds:
        argv += ["--ro-bind", host_path, inside]
    argv += [
        "--remount-ro", "/",
        "--chdir", WORKSPACE,
        "--setenv", "HOME", WORKSPACE,
        "--info-fd", str(spec.info_fd),
        "--block-fd", str(spec.block_fd),
        "--seccomp", str(spec.seccomp_fd),
        "--",
        *command,
    ]
    return argv


def args_via_fd(argv: list[str]) -> tuple[list[str], int]:
    """Move bwrap's options (everything between ``argv[0]`` and ``--``) into a memfd
    read through ``--args``; the command after ``--`` stays on the command line (bwrap
    reads only options from the fd).

    Returns the short argv and the fd, which the caller passes to bwrap and closes.
    A memfd rather than a pipe: no size limit, no writer to keep alive.
    """
    split = argv.index("--")
    fd = os.memfd_create("bastion-bwrap-args", os.MFD_CLOEXEC)
    try:
        data = b"".join(os.fsencode(arg) + b"\0" for arg in argv[1:split])
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return [argv[0], "--args", str(fd), *argv[split:]], fd
