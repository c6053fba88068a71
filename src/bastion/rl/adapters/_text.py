"""Turning a model's free-text turn into one tool-call action for ``BastionEnv``.

Trainers that hand the environment raw model text (OpenRLHF, SkyRL, ROLL) need the
tool call cut out of it. Accepted forms, first match wins:

- ``<tool_call>{json}</tool_call>`` (Qwen/Hermes style)
- a fenced ```` ```bash ```` / ```` ```sh ```` / ```` ``` ```` block: a shell command
- a bare JSON tool call or shell command (the whole text)
"""

from __future__ import annotations

import json
import re

__all__ = ["extract_action", "format_observation"]

_TOOL_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)
_FENCE = re.compile(r"```(?:bash|sh|shell)?\s*\n(.*?)```", re.DOTALL)


def extract_action(text: str) -> str:
    match = _TOOL_CALL.search(text)
    if match:
        try:
            data = json.loads(match.group(1))
        except json.JSONDecodeError:
            return match.group(1)
        if isinstance(data, dict) and isinstance(data.get("arguments"), str):
            try:
                data["arguments"] = json.loads(data["arguments"])
            except json.JSONDecodeError:
                pass
        return json.dumps(data)
    match = _FENCE.search(text)
    if match:
        return match.group(1).strip()
    return text.strip()


def format_observation(observation: str) -> str:
    """How an observation is shown back to the model in text-only trainers."""
    return f"\n<observation>\n{observation}\n</observation>\n"
