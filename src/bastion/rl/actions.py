"""Tool calls as text: how a model's action string becomes one call in a session.

An action is either a shell command line, or a JSON object naming a tool:

    {"tool": "read_file", "path": "calc.py"}
    {"tool": "write_file", "path": "calc.py", "content": "..."}
    {"tool": "shell", "command": "pytest -q"}
    {"tool": "submit"}

Text that is not a JSON object is a shell command. Every tool goes through
``Session.exec`` (the single choke point), so a file write is observed, attributed
and judged exactly like ``echo > file``; nothing here touches the workspace directly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from ..results import ExecResult
from ..session import Session

__all__ = ["ToolCall", "parse_action", "run_tool_call"]

ToolName = Literal["shell", "read_file", "write_file", "submit"]


@dataclass(frozen=True)
class ToolCall:
    tool: ToolName
    command: str = ""
    path: str = ""
    content: str = ""
    malformed: str | None = None  # why the action could not be understood, if it could not

    def describe(self) -> str:
        if self.tool == "shell":
            return self.command
        if self.tool == "submit":
            return "submit"
        return f"{self.tool} {self.path}"


def parse_action(action: str) -> ToolCall:
    """Turn a model's action text into a tool call. Never raises: a malformed JSON
    tool call is returned with ``malformed`` set, and the environment answers the
    agent with the reason (a bad action is the agent's mistake, not bastion's)."""
    text = action.strip()
    if not text.startswith("{"):
        return ToolCall("shell", command=action)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return ToolCall("shell", command=action, malformed=f"invalid JSON tool call: {exc}")
    if not isinstance(data, dict):
        return ToolCall("shell", command=action, malformed="a tool call must be a JSON object")
    tool = data.get("tool", data.get("name"))
    args = data.get("arguments", data)
    if not isinstance(args, dict):
        return ToolCall("shell", command=action, malformed="tool arguments must be an object")
    if tool in ("shell", "bash", "run"):
        command = args.get("command", args.get("cmd"))
        if not isinstance(command, str):
            return ToolCall("shell", command=action, malformed="shell needs a string 'command'")
        return ToolCall("shell", command=command)
    if tool in ("read_file", "write_file"):
        path = args.get("path")
        if not isinstance(path, str) or not path:
            return ToolCall("shell", command=action, malformed=f"{tool} needs a string 'path'")
        content = args.get("content", "")
        if tool == "write_file" and not isinstance(content, str):
            return ToolCall("shell", command=action, malformed="write_file needs string 'content'")
        return ToolCall(tool, path=path, content=content if tool == "write_file" else "")
    if tool == "submit":
        return ToolCall("submit")
    return ToolCall("shell", command=action, malformed=f"unknown tool {tool!r}")


def run_tool_call(session: Session, call: ToolCall, *, step: int, call_id: str,
                  timeout: float | None = None) -> ExecResult:
    """Run one parsed tool call through the session's choke point."""
    if call.tool == "read_file":
        return session.read_file(call.path, step=step, call_id=call_id)
    if call.tool == "write_file":
        return session.write_file(call.path, call.content, step=step, call_id=call_id)
    if call.tool == "shell":
        return session.exec(call.command, step=step, call_id=call_id, timeout=timeout)
    raise ValueError(f"{call.tool} is not run in the sandbox")
