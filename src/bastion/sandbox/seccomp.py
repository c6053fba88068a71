"""The seccomp filter every sandboxed process runs under.

A deny list on top of namespaces and dropped capabilities: these syscalls either
reach kernel attack surface an agent never needs (bpf, io_uring, userfaultfd, keyrings,
perf) or would let it inspect or tamper with other processes (ptrace,
process_vm_readv/writev) or the filesystem layout (mount family). Denied calls fail
with EPERM rather than killing the process, so ordinary programs that probe for a
feature degrade gracefully while the attempt is still refused.

The filter is compiled with libseccomp (through pyseccomp) once per process and
handed to bubblewrap as a BPF program on a file descriptor.
"""

from __future__ import annotations

import errno
import functools
import tempfile

from ..errors import SandboxUnavailable

__all__ = ["DENIED_SYSCALLS", "compiled_filter", "notify_filter", "seccomp_syscall_nr"]

DENIED_SYSCALLS: tuple[str, ...] = (
    # debugging / cross-process memory access
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    # filesystem layout
    "mount", "umount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    # kernel attack surface
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "keyctl", "add_key", "request_key",
    # machine-level
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "reboot", "swapon", "swapoff", "acct", "settimeofday", "clock_settime", "adjtimex",
    "clock_adjtime", "syslog", "quotactl", "lookup_dcookie", "vhangup",
    "open_by_handle_at", "name_to_handle_at",
    # namespaces (bwrap's --disable-userns covers user namespaces; this covers the rest)
    "setns", "unshare",
)


def _pyseccomp():  # type: ignore[no-untyped-def]
    try:
        import pyseccomp as seccomp
    except (ImportError, OSError) as exc:  # libseccomp.so missing
        raise SandboxUnavailable(
            "libseccomp is missing: install it with `apt-get install libseccomp2`"
        ) from exc
    return seccomp


def _export(filt) -> bytes:  # type: ignore[no-untyped-def]
    with tempfile.TemporaryFile() as out:
        filt.export_bpf(out)
        out.seek(0)
        return out.read()


@functools.cache
def notify_filter() -> bytes:
    """The second filter, installed by the supervisor with a listener for the host
    (``execnotify.py``): every ``execve``/``execveat`` waits until the host has read
    its argv (``SECCOMP_RET_USER_NOTIF``). Anything else passes to the deny list."""
    seccomp = _pyseccomp()
    filt = seccomp.SyscallFilter(seccomp.ALLOW)
    for name in ("execve", "execveat"):
        filt.add_rule(seccomp.NOTIFY, name)
    return _export(filt)


@functools.cache
def seccomp_syscall_nr() -> int:
    """The number of seccomp(2) on this architecture (the supervisor has no libc
    wrapper for it, only ``syscall``)."""
    seccomp = _pyseccomp()
    return int(seccomp.resolve_syscall(seccomp.system_arch(), "seccomp"))


@functools.cache
def compiled_filter() -> bytes:
    """The BPF program for the native architecture."""
    seccomp = _pyseccomp()
    filt = seccomp.SyscallFilter(seccomp.ALLOW)
    for name in DENIED_SYSCALLS:
        try:
            filt.add_rule(seccomp.ERRNO(errno.EPERM), name)
        except (ValueError, RuntimeError, OSError):
            # a syscall this architecture or libseccomp version does not know
            continue
    return _export(filt)
