"""Policy: the one file that decides what a session may do.

``Policy`` is the public face; the section models live in their own modules so that
each part of bastion (sandbox, gateway, engine, responder, RL) owns its own section.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .loader import load_policy_text, policy_hash, read_policy_file
from .model import PolicyModel

__all__ = ["Policy", "PolicyModel"]


@dataclass(frozen=True)
class Policy:
    """A validated policy plus where it came from and its content hash."""

    model: PolicyModel
    source: str = "<built-in default>"
    text: str = ""
    hash: str = field(default="")

    def __post_init__(self) -> None:
        if not self.hash:
            object.__setattr__(self, "hash", policy_hash(self.model))

    @classmethod
    def default(cls) -> Policy:
        return cls(PolicyModel())

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        text, model = read_policy_file(path)
        return cls(model, source=str(path), text=text)

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "<string>") -> Policy:
        return cls(load_policy_text(text, file=source), source=source, text=text)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "<dict>") -> Policy:
        text = yaml.safe_dump(data, sort_keys=False)
        return cls.from_yaml(text, source=source)

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def sandbox(self):  # type: ignore[no-untyped-def]
        return self.model.sandbox

    @property
    def network(self):  # type: ignore[no-untyped-def]
        return self.model.network

    @property
    def rules(self):  # type: ignore[no-untyped-def]
        return self.model.rules

    @property
    def response(self):  # type: ignore[no-untyped-def]
        return self.model.response

    @property
    def rl(self):  # type: ignore[no-untyped-def]
        return self.model.rl

    def to_yaml(self) -> str:
        """The policy as written, or a canonical rendering of a built-in one."""
        if self.text:
            return self.text
        rendered = _RENDERED.get(self.hash)
        if rendered is None:
            rendered = _RENDERED[self.hash] = yaml.safe_dump(
                self.model.model_dump(mode="json"), sort_keys=False)
        return rendered


_RENDERED: dict[str, str] = {}  # policy hash -> canonical YAML of built-in policies
