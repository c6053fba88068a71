"""`bastion run` and `bastion check` answered by a running node, with nothing imported.

A one-shot command that a node daemon will answer needs no typer, pydantic, rules,
sandbox or asyncio in its own process: it parses its few options, sends one request
over the node's JSON-lines socket and prints the answer. This module imports only the
standard library's ``os``, ``sys``, ``json``, ``socket`` and ``base64``, so the command
costs the interpreter's start plus the node's work (issue 15: ``bastion run -- true``
≤ 0.35 s, ``bastion check`` ≤ 0.2 s).

``answer(argv)`` returns the exit status when a node answered, or None when this path
does not apply (no node, an option it does not know, ``--help``, a value the full
command should reject with its own message): the caller then runs the full command,
which behaves exactly as before. Nothing is read from stdin and nothing is printed
before the node has answered ``hello``, so a fallback never loses input or output.

The wire format is ``bastion.daemon.protocol``'s (version 1); the output matches the
full command's (``bastion.cli.run`` / ``bastion.cli.check``).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sys

from ..textsafe import plain as _plain

TYPE_CHECKING = False  # not typing's: importing typing costs this command ~10 ms
if TYPE_CHECKING:
    from typing import Any, Self

__all__ = ["answer"]

# bastion.state.DEFAULT_STATE_DIR and bastion.daemon.protocol's values, repeated so that
# this module imports nothing of bastion (a test keeps them equal)
DEFAULT_STATE_DIR = "/var/lib/bastion"
PROTOCOL_VERSION = 1
MAX_FRAME = 256 * 1024 * 1024

# the exit status of the full command for an error of this type (cli.common.user_errors)
_USER_ERRORS = frozenset({"PolicyError", "SandboxUnavailable"})


class _Fallback(Exception):
    """This path does not apply: run the full command."""


class _NodeError(Exception):
    """The node answered a request with an error (``{"type", "message"}``)."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(str(error.get("message", "error")))
        self.kind = str(error.get("type", "InternalError"))


def answer(argv: list[str]) -> int | None:
    """The exit status of ``bastion <argv>`` answered by a node, or None (fall back)."""
    if os.environ.get("BASTION_NO_NODE") or not argv:
        return None
    try:
        if argv[0] == "run":
            opts, command = _parse(argv[1:], flags={"--json"}, valued={
                "--timeout", "--policy", "-p", "--state-dir"}, positional=True)
            if not command:
                return None
            timeout = _timeout(opts.get("--timeout"))
            conn = _connect(opts.get("--state-dir"))
            with conn:
                return _run(conn, command, opts, timeout)
        if argv[0] == "check":
            opts, _rest = _parse(argv[1:], flags={"--json"}, valued={
                "--policy", "-p", "--state-dir"}, positional=False)
            conn = _connect(opts.get("--state-dir"))
            with conn:
                return _check(conn, opts)
    except _Fallback:
        return None
    return None


# -- the command line ---------------------------------------------------------------------


def _parse(args: list[str], *, flags: set[str], valued: set[str],
           positional: bool) -> tuple[dict[str, Any], list[str]]:
    """Options as typer reads them for these commands (``--opt value``, ``--opt=value``,
    ``--`` ends them; for `run`, the first positional starts the command). Anything
    else (``--help``, ``--lab``, ``--image``, a typo) is for the full command."""
    opts: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest = args[i + 1:]
            if not positional:
                raise _Fallback
            return opts, rest
        if not arg.startswith("-") or arg == "-":
            if not positional:
                raise _Fallback
            return opts, args[i:]
        name, eq, value = arg.partition("=")
        if eq and not name.startswith("--"):
            raise _Fallback  # click reads `-p=x` as the value "=x": leave it to click
        if name in flags and not eq:
            opts[name] = True
        elif name in valued:
            if not eq:
                i += 1
                if i >= len(args):
                    raise _Fallback
                value = args[i]
            opts["--policy" if name == "-p" else name] = value
        else:
            raise _Fallback
        i += 1
    return opts, []


def _timeout(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise _Fallback from None
    if not (value > 0 and value != float("inf")):
        raise _Fallback  # the full command says what is accepted
    return value


def _policy(opts: dict[str, Any]) -> tuple[str | None, str | None]:
    """The policy file's text and source, as ``daemon.client._policy_text`` sends it."""
    path = opts.get("--policy")
    if path is None:
        return None, None
    if not os.path.isfile(path):
        raise _Fallback  # the full command reports a missing policy
    with open(path, encoding="utf-8") as f:
        return f.read(), str(path)


# -- the connection -----------------------------------------------------------------------


class _Conn:
    """One blocking connection that has said ``hello``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")
        self.next_id = 1

    def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        rid, self.next_id = self.next_id, self.next_id + 1
        data = json.dumps({**msg, "id": rid}, ensure_ascii=True, separators=(",", ":"))
        self.sock.sendall(data.encode() + b"\n")
        line = self.file.readline(MAX_FRAME + 1)
        if not line:
            raise _NodeError({"type": "SessionBroken",
                              "message": "the bastion node went away (connection closed)"})
        reply = json.loads(line)
        if not reply.get("ok"):
            raise _NodeError(reply.get("error") or {})
        return reply

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()
        self.sock.close()


def _connect(state_dir: str | None) -> _Conn:
    """An authenticated connection to the state directory's node; ``_Fallback`` when no
    node answers (the full command then runs the session in its own process)."""
    root = os.path.abspath(state_dir or os.environ.get("BASTION_STATE_DIR")
                           or DEFAULT_STATE_DIR)
    try:
        with open(os.path.join(root, "node", "address"), encoding="utf-8") as f:
            path = f.read().strip()
        with open(os.path.join(root, "node", "token"), encoding="utf-8") as f:
            token = f.read().strip()
    except OSError:
        raise _Fallback from None
    if not path or not token:
        raise _Fallback
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    conn = _Conn(sock)
    try:
        sock.connect(path)
        conn.request({"op": "hello", "version": PROTOCOL_VERSION, "token": token})
    except (OSError, ValueError, _NodeError):
        conn.__exit__()
        raise _Fallback from None
    return conn


def _error(exc: BaseException) -> int:
    """One line on stderr, the full command's exit status for it."""
    if isinstance(exc, _NodeError):
        print(f"bastion: {exc}", file=sys.stderr)
        return 2 if exc.kind in _USER_ERRORS else 1
    print(f"bastion: the bastion node went away: {exc}", file=sys.stderr)
    return 1


def _stdin_bytes() -> bytes | None:
    return None if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer.read()


# -- the commands -------------------------------------------------------------------------


def _run(conn: _Conn, command: list[str], opts: dict[str, Any], timeout: float | None) -> int:
    policy_text, source = _policy(opts)
    stdin = _stdin_bytes()
    cmd: str | list[str] = command[0] if len(command) == 1 else command
    try:
        msg: dict[str, Any] = {"op": "open", "run_id": "", "episode_id": "", "lab": False}
        if policy_text is not None:
            msg["policy"], msg["policy_source"] = policy_text, source
        info = conn.request(msg)
        call: dict[str, Any] = {"op": "exec", "session": info["session"], "cmd": cmd,
                                "step": 0, "call_id": "c0", "timeout": timeout,
                                "env": None, "cwd": None}
        if stdin is not None:
            call["stdin_b64"] = base64.b64encode(stdin).decode()
        result: dict[str, Any] = conn.request(call)["result"]
        conn.request({"op": "close", "session": info["session"]})
    except (_NodeError, OSError, ValueError) as exc:
        return _error(exc)
    if opts.get("--json"):
        print(json.dumps({**result, "session_id": info["session"],
                          "policy": info.get("policy_name", ""),
                          "policy_hash": info.get("policy_hash", ""), "node": True}))
    else:
        sys.stdout.write(result.get("stdout", ""))
        sys.stdout.flush()
        sys.stderr.write(result.get("stderr", ""))
        outcome = str(result.get("outcome"))
        if outcome not in ("ok", "exit_nonzero"):
            _say(_style("bastion:", "1;31") + f" {outcome}: {_plain(result.get('reason') or '')}")
        for v in result.get("verdicts") or ():
            _say(_style("verdict", "33") + f" {v.get('severity')} {_plain(v.get('rule_id'))}: "
                 f"{_plain(v.get('message'))} -> {v.get('action')}")
    code = int(result.get("exit_code", 1))
    return code if code < 256 else 1


def _check(conn: _Conn, opts: dict[str, Any]) -> int:
    policy_text, source = _policy(opts)
    as_json = bool(opts.get("--json"))
    text = sys.stdin.read() if sys.stdin is not None else ""
    try:
        reply = conn.request({"op": "check", "input": text, "policy": policy_text,
                              "policy_source": source, "json": as_json})
    except (_NodeError, OSError, ValueError) as exc:
        return _error(exc)
    sys.stdout.write(reply.get("output", ""))
    sys.stdout.flush()
    if reply.get("error"):
        return _error(_NodeError(reply["error"]))
    counts = reply.get("counts") or {}
    if not as_json:
        print(f"checked {sum(counts.values())}: {counts.get('deny', 0)} deny, "
              f"{counts.get('alert', 0)} alert, {counts.get('allow', 0)} allow",
              file=sys.stderr)
    return 0


def _style(text: str, sgr: str) -> str:
    return f"\x1b[{sgr}m{text}\x1b[0m" if sys.stderr.isatty() else text


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()

