"""The ``response:`` section: which action each severity gets."""

from __future__ import annotations

from pydantic import Field

from ..events import Action
from ._base import Section

__all__ = ["ResponsePolicy"]


class ResponsePolicy(Section):
    critical: Action = Action.TERMINATE
    high: Action = Action.KILL
    medium: Action = Action.ALERT
    low: Action = Action.NONE
    info: Action = Action.NONE
    webhook: str | None = Field(default=None, description="URL that receives alert JSON")

    def for_severity(self, severity: str) -> Action:
        return getattr(self, str(severity))
