"""The supervisor: the one long-lived process bastion runs *inside* each sandbox.

It is untrusted by design: it only forks the commands the host asks for and reports
their exit status. Everything that matters for security (attribution, cgroup
placement, timeouts, killing) is done from outside by the host, which holds a pidfd
for every command. What the agent can still do to it, the host watches for:

- it makes itself non-dumpable first thing, so that the agent's processes (same uid,
  no capabilities) cannot open its ``/proc/<pid>/mem``, ``fd/`` or ``environ`` and
  write into its heap; a supervisor that cannot do so refuses to start;
- its memory and tasks are accounted apart from the calls' (see ``cgroups.py``), so an
  agent's OOM or fork bomb cannot take it down;
- signals from the agent (SIGSTOP, SIGKILL) cannot be prevented under one uid, so the
  host watches it (``watch.py``): a stopped, killed or unresponsive supervisor ends the
  session with a ``monitor_tamper`` verdict.

Protocol, over a SOCK_SEQPACKET socket whose fd number is argv[1], one message per
packet. Host to supervisor: ``marshal``-encoded dicts (the supervisor trusts the host).
Supervisor to host: JSON text (the host never unmarshals what the sandbox wrote).

    host -> sup   {"op": "exec", "id": N, "argv": [b"..."], "env": {...}, "cwd": "..."}
                  + SCM_RIGHTS [stdin, stdout, stderr]
    host -> sup   {"op": "large"} + SCM_RIGHTS [..., memfd]: a message too large for one
                  packet (an exec of a 1 MiB argv), marshal-encoded in the memfd
    sup  -> host  {"op": "listener"} + SCM_RIGHTS [seccomp listener]   (first, once; or
                  {"op": "listener", "errno": N} if it could not be installed)
    sup  -> host  {"op": "started", "id": N, "pid": <pid inside>}  + SCM_RIGHTS [pidfd]
    host -> sup   {"op": "go", "id": N}          (after moving the pid to its cgroup)
    host -> sup   {"op": "signal", "id": N, "sig": 9}   (kill the call's process group)
    sup  -> host  {"op": "exited", "id": N, "status": <wait status>}
    sup  -> host  {"op": "error", "id": N, "error": "..."}

It runs under ``python3 -I -S`` with the sandbox's root filesystem, so it uses only
built-in modules, and only those that import in microseconds (``_socket`` and
``_signal`` rather than ``socket`` and ``signal``, no ``json``): its start-up is part
of every session's creation time.
"""


def install_exec_listener(bpf: "bytes", seccomp_nr: "int") -> "tuple[int, int]":
    """Install the exec listener's filter (compiled by ``seccomp.notify_filter``) on this
    process with seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER):
    ``(listener fd, 0)``, or ``(-1, errno)``. Built-in modules only (see above);
    ``benchmarks/bench_exec.py`` times this very function."""
    import _ctypes
    import sys

    class _Long(_ctypes._SimpleCData):
        _type_ = "l"

    class _Char(_ctypes._SimpleCData):
        _type_ = "c"

    class _Sys(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = _Long

    class _Prog(_ctypes.Array):
        _type_ = _Char
        _length_ = len(bpf)

    class _Fprog(_ctypes.Array):  # struct sock_fprog {u16 len; struct sock_filter *}
        _type_ = _Char
        _length_ = 16

    prog = _Prog.from_buffer_copy(bpf)
    fprog = _Fprog.from_buffer_copy((len(bpf) // 8).to_bytes(2, sys.byteorder) + bytes(6)
                                    + _ctypes.addressof(prog).to_bytes(8, sys.byteorder))
    syscall = _Sys(_ctypes.dlsym(_ctypes.dlopen(None, 2), "syscall"))
    listener = syscall(_Long(seccomp_nr), _Long(1), _Long(8), _Long(_ctypes.addressof(fprog)))
    return (listener, 0) if listener >= 0 else (-1, _ctypes.get_errno())


def main() -> None:  # pragma: no cover - runs inside the sandbox, tested end to end
    import _ctypes
    import _signal
    import _socket
    import array
    import marshal
    import os
    import select
    import sys

    class _Int(_ctypes._SimpleCData):
        _type_ = "i"

    class _Fn(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL
        _restype_ = _Int

    # _ctypes rather than ctypes: 0.7 ms instead of 4.5 ms of every session's start
    prctl = _Fn(_ctypes.dlsym(_ctypes.dlopen(None, 2), "prctl"))
    pr_set_dumpable, pr_get_dumpable = 4, 3
    if prctl(pr_set_dumpable, 0, 0, 0, 0) != 0 or prctl(pr_get_dumpable, 0, 0, 0, 0) != 0:
        raise SystemExit("bastion supervisor: cannot make itself non-dumpable")

    control_fd = int(sys.argv[1])
    sock = _socket.socket(fileno=control_fd)
    os.set_inheritable(control_fd, False)  # agent commands must never see the control socket
    sol_socket, scm_rights = _socket.SOL_SOCKET, _socket.SCM_RIGHTS

    if len(sys.argv) > 4 and sys.argv[3]:
        # the exec listener (execnotify.py), before any call exists: every exec of every
        # call then waits until the host has read its argv. The listener goes to the
        # host and is closed here, so nothing of the agent's can reach it in this process
        listener, error = install_exec_listener(bytes.fromhex(sys.argv[3]), int(sys.argv[4]))
        if listener < 0:
            sock.send(b'{"op":"listener","errno":%d}' % error)
        else:
            sock.sendmsg([b'{"op":"listener"}'],
                         [(sol_socket, scm_rights, array.array("i", [listener]))])
            os.close(listener)
    calls = {}  # pid -> (call id, go-pipe write end)
    pgids = {}  # call id -> pgid
    # a write to a dead reader raises instead of killing the supervisor: the host may
    # kill a call (a cancelled await) while its "go" is still in the socket, and the
    # supervisor then writes "go" into a pipe nobody reads any more
    _signal.signal(_signal.SIGPIPE, _signal.SIG_IGN)
    sig_r, sig_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    _signal.set_wakeup_fd(sig_w)
    _signal.signal(_signal.SIGCHLD, lambda *_: None)

    def send(text, fds=()):
        data = text.encode()
        if fds:
            sock.sendmsg([data], [(sol_socket, scm_rights, array.array("i", fds))])
        else:
            sock.send(data)

    def quote(text):
        return '"' + "".join(c if c.isalnum() or c in " .:_-/" else "\\u%04x" % ord(c)
                             for c in text) + '"'

    def reap():
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            entry = calls.pop(pid, None)
            if entry is not None:
                if entry[1] is not None:
                    os.close(entry[1])  # ended before its "go" (killed while it waited)
                send('{"op":"exited","id":%d,"status":%d}' % (entry[0], status))

    def start(msg, fds):
        call_id = msg["id"]
        go_r, go_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            try:
                os.setsid()
                stdin, stdout, stderr = fds
                os.dup2(stdin, 0)
                os.dup2(stdout, 1)
                os.dup2(stderr, 2)
                for fd in set(fds):
                    if fd > 2:
                        os.close(fd)
                os.read(go_r, 1)
                for sig in (_signal.SIGCHLD, _signal.SIGPIPE):
                    _signal.signal(sig, _signal.SIG_DFL)
                os.chdir(msg.get("cwd") or "/")
                os.execvpe(msg["argv"][0], msg["argv"], msg["env"])
            except BaseException as exc:  # noqa: BLE001 - report and die
                try:
                    os.write(2, ("bastion: cannot run %r: %s\n" % (msg["argv"][0], exc)).encode())
                finally:
                    os._exit(127)
        os.close(go_r)
        for fd in fds:
            os.close(fd)
        pgids[call_id] = pid
        calls[pid] = (call_id, go_w)
        pidfd = os.pidfd_open(pid)
        send('{"op":"started","id":%d,"pid":%d}' % (call_id, pid), [pidfd])
        os.close(pidfd)

    # poll, not select: the socket keeps the host's fd number, which is above 1024 when
    # the host process holds many sessions
    poller = select.poll()
    poller.register(control_fd, select.POLLIN)
    poller.register(sig_r, select.POLLIN)
    while True:
        try:
            ready = {fd for fd, _ in poller.poll()}
        except InterruptedError:
            continue
        if sig_r in ready:
            try:
                os.read(sig_r, 4096)
            except BlockingIOError:
                pass
            reap()
        if control_fd not in ready:
            continue
        fds = array.array("i")
        try:
            data, ancdata, _flags, _addr = sock.recvmsg(
                1 << 20, _socket.CMSG_SPACE(16 * fds.itemsize))
        except InterruptedError:
            continue
        if not data:
            os._exit(0)  # host went away: the session is over
        for level, kind, payload in ancdata:
            if level == sol_socket and kind == scm_rights:
                fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
        msg = marshal.loads(data)
        if msg.get("op") == "large" and fds:  # the message itself is in a memfd (last fd)
            spill = fds.pop()
            msg = marshal.loads(os.pread(spill, os.fstat(spill).st_size, 0))
            os.close(spill)
        op = msg.get("op")
        try:
            if op == "exec":
                start(msg, list(fds))
            elif op == "go":
                for pid, (cid, go_w) in list(calls.items()):
                    if cid == msg["id"] and go_w is not None:
                        try:
                            os.write(go_w, b"g")
                        except BrokenPipeError:
                            pass  # killed before it was let go: reap() reports its end
                        os.close(go_w)
                        calls[pid] = (cid, None)
            elif op == "signal":
                pgid = pgids.get(msg["id"])
                if pgid is not None:
                    try:
                        os.killpg(pgid, msg.get("sig", 9))
                    except ProcessLookupError:
                        pass
            elif op == "ping":
                send('{"op":"pong"}')
        except OSError as exc:
            send('{"op":"error","id":%d,"error":%s}' % (msg.get("id") or 0, quote(str(exc))))
        reap()


if __name__ == "__main__":  # pragma: no cover
    main()
