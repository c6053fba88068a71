"""The whole policy file, composed from one model per section."""

from __future__ import annotations

from pydantic import Field

from ._base import Section
from .network import NetworkPolicy
from .response import ResponsePolicy
from .rl import RLPolicy
from .rules import RulesPolicy
from .sandbox import SandboxPolicy

__all__ = ["PolicyModel"]


class PolicyModel(Section):
    name: str = "default"
    sandbox: SandboxPolicy = Field(default_factory=SandboxPolicy)
    network: NetworkPolicy = Field(default_factory=NetworkPolicy)
    rules: RulesPolicy = Field(default_factory=RulesPolicy)
    response: ResponsePolicy = Field(default_factory=ResponsePolicy)
    rl: RLPolicy = Field(default_factory=RLPolicy)
