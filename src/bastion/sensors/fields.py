"""Event fields the sensors, engine and responder add beyond ``FIELD_CATALOGUE``.

Kept here until the lead merges them into ``bastion.events.FIELD_CATALOGUE``;
``catalogue()`` returns the union so rule compilers and docs can use them today.
"""

from __future__ import annotations

from ..events import FIELD_CATALOGUE

__all__ = ["EXTRA_FIELDS", "catalogue"]

EXTRA_FIELDS: dict[str, tuple[str, str]] = {
    "proc.source": ("str", "how the process event was observed: netlink or poll"),
    "proc.tid": ("int", "thread id when it differs from the pid"),
    "proc.exit_signal": ("int", "signal that ended the process (exit events), 0 if none"),
    "res.scope": ("str", "what a resource sample covers: session or process"),
    "res.interval": ("float", "seconds the resource sample covers"),
    "telemetry.loss": ("bool", "true when events were lost (sessions are frozen)"),
    "telemetry.gap": ("bool", "true when a sensor runs degraded and may miss events"),
    "telemetry.lag_ms": ("float", "how far behind the kernel the sensor was"),
    "file.class": ("str", "persistence class: cron, shell_rc, ssh, systemd_user, ..."),
    "file.size": ("int", "size in bytes after the change (-1 when deleted)"),
    "file.sha256": ("str", "content hash after the change (empty when deleted/large)"),
    "file.attribution": ("str", "how the call was chosen: latest_call or none"),
    "action.ok": ("bool", "whether the action succeeded"),
    "action.verdict": ("str", "id of the verdict the action answered"),
    "action.detail": ("str", "what exactly was done"),
}


def catalogue() -> dict[str, tuple[str, str]]:
    return {**FIELD_CATALOGUE, **EXTRA_FIELDS}
