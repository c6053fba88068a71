"""Action text -> tool call parsing, and model-text extraction for text trainers."""

from __future__ import annotations

import json

from bastion.rl import parse_action
from bastion.rl.adapters._text import extract_action


def test_shell_and_json_tools():
    assert parse_action("ls -la").tool == "shell"
    assert parse_action('{"tool": "read_file", "path": "a.py"}').path == "a.py"
    call = parse_action(json.dumps({"name": "write_file",
                                    "arguments": {"path": "b", "content": "x"}}))
    assert (call.tool, call.path, call.content) == ("write_file", "b", "x")
    assert parse_action('{"tool": "shell", "command": "id"}').command == "id"
    assert parse_action('{"tool": "submit"}').tool == "submit"


def test_malformed_tool_calls_are_answers_not_errors():
    assert "invalid JSON" in parse_action("{not json").malformed
    assert "needs a string 'path'" in parse_action('{"tool": "read_file"}').malformed
    assert "unknown tool" in parse_action('{"tool": "rm_rf"}').malformed
    assert "string 'content'" in parse_action(
        '{"tool": "write_file", "path": "a", "content": 3}').malformed
    assert "must be an object" in parse_action('{"tool": "shell", "arguments": 5}').malformed
    assert parse_action("  [1, 2]").tool == "shell"  # not a JSON object: a shell command


def test_extract_action_from_model_text():
    assert extract_action("I will look.\n```bash\nls -la\n```\nthen more") == "ls -la"
    tool = extract_action('ok <tool_call>{"name": "read_file", "arguments": '
                          '"{\\"path\\": \\"x\\"}"}</tool_call>')
    assert json.loads(tool) == {"name": "read_file", "arguments": {"path": "x"}}
    assert parse_action(tool).path == "x"
    assert extract_action("  echo hi  ") == "echo hi"
