"""The supervisor: the one long-lived process bastion runs *inside* each sandbox.

It is untrusted by design (the agent can kill it; then the session is broken and
closed): it only forks the commands the host asks for and reports their exit status.
Everything that matters for security (attribution, cgroup placement, timeouts,
killing) is done from outside by the host, which holds a pidfd for every command.

Protocol, over a SOCK_SEQPACKET socket whose fd number is argv[1] (one JSON message per packet):

    host -> sup   {"op": "exec", "id": N, "argv": [...], "env": {...}, "cwd": "..."}
                  + SCM_RIGHTS [stdin, stdout, stderr]
    sup  -> host  {"op": "started", "id": N, "pid": <pid inside>}  + SCM_RIGHTS [pidfd]
    host -> sup   {"op": "go", "id": N}          (after moving the pid to its cgroup)
    host -> sup   {"op": "signal", "id": N, "sig": 9}   (kill the call's process group)
    sup  -> host  {"op": "exited", "id": N, "status": <wait status>}
    sup  -> host  {"op": "error", "id": N, "error": "..."}

This file must run with nothing but the standard library, under ``python3 -I -S``,
because it executes with the sandbox's root filesystem.
"""

SOURCE_MARKER = "bastion-supervisor"


def main() -> None:  # pragma: no cover - runs inside the sandbox, tested end to end
    import array
    import json
    import os
    import select
    import signal
    import socket

    import sys

    control_fd = int(sys.argv[1])
    sock = socket.socket(fileno=control_fd)
    os.set_inheritable(control_fd, False)  # agent commands must never see the control socket
    calls = {}  # pid -> (call id, go-pipe write end)
    pgids = {}  # call id -> pgid
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sig_r, sig_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(sig_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)

    def send(msg, fds=()):
        data = json.dumps(msg).encode()
        if fds:
            sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        else:
            sock.send(data)

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
                send({"op": "exited", "id": entry[0], "status": status})

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
                for sig in (signal.SIGCHLD, signal.SIGPIPE):
                    signal.signal(sig, signal.SIG_DFL)
                os.chdir(msg.get("cwd") or "/")
                os.execvpe(msg["argv"][0], msg["argv"], msg["env"])
            except BaseException as exc:  # noqa: BLE001 - report and die
                try:
                    os.write(2, f"bastion: cannot run {msg['argv'][0]!r}: {exc}\n".encode())
                finally:
                    os._exit(127)
        os.close(go_r)
        for fd in fds:
            os.close(fd)
        pgids[call_id] = pid
        calls[pid] = (call_id, go_w)
        pidfd = os.pidfd_open(pid)
        send({"op": "started", "id": call_id, "pid": pid}, [pidfd])
        os.close(pidfd)

    while True:
        ready, _, _ = select.select([sock, sig_r], [], [])
        if sig_r in ready:
            try:
                os.read(sig_r, 4096)
            except BlockingIOError:
                pass
            reap()
        if sock not in ready:
            continue
        fds = array.array("i")
        try:
            data, ancdata, _flags, _addr = sock.recvmsg(65536, socket.CMSG_SPACE(16 * fds.itemsize))
        except InterruptedError:
            continue
        if not data:
            os._exit(0)  # host went away: the session is over
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
        msg = json.loads(data)
        op = msg.get("op")
        try:
            if op == "exec":
                start(msg, list(fds))
            elif op == "go":
                for pid, (cid, go_w) in list(calls.items()):
                    if cid == msg["id"] and go_w is not None:
                        os.write(go_w, b"g")
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
                send({"op": "pong"})
        except OSError as exc:
            send({"op": "error", "id": msg.get("id"), "error": str(exc)})
        reap()


if __name__ == "__main__":  # pragma: no cover
    main()
