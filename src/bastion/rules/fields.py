"""Which fields rules may name, their types, and which event kinds carry them.

The authoritative list is ``bastion.events.FIELD_CATALOGUE``: a field it does not name
is a load error, so a typo in a pack never becomes a rule that silently never fires.

``implied_kinds`` maps a field's namespace to the event kinds that carry it: a rule that
does not say which kinds it applies to is indexed under the kinds its fields imply.
"""

from __future__ import annotations

from ..events import ATTRIBUTE_FIELDS, FIELD_CATALOGUE, EventKind

__all__ = ["field_type", "implied_kinds", "known_fields"]

_ALL: dict[str, tuple[str, str]] = FIELD_CATALOGUE

_NET_KINDS = frozenset({"net.connect", "net.flow", "net.close", "net.drop"})
_NAMESPACE_KINDS: dict[str, frozenset[str]] = {
    "cmd": frozenset({EventKind.COMMAND.value}),
    "proc": frozenset({EventKind.EXEC.value}),
    "net": _NET_KINDS,
    "dns": frozenset({EventKind.DNS_QUERY.value}),
    "file": frozenset({EventKind.FILE_WRITE.value, EventKind.FILE_DIFF.value,
                       EventKind.FILE_READ.value}),
    "res": frozenset({EventKind.RESOURCE.value}),
    "life": frozenset({EventKind.LIFECYCLE.value}),
    "action": frozenset({EventKind.ACTION.value}),
    "telemetry": frozenset({EventKind.TELEMETRY.value}),
}
ALL_KINDS = frozenset(k.value for k in EventKind)
# Attribution fields (and proc.pid/ppid/ancestry) exist on every kind.
_EVERY_KIND_FIELDS = frozenset(ATTRIBUTE_FIELDS)


# Substring prefilter: a field whose every element appears verbatim in another field is
# scanned through that one, so one automaton pass covers both (cmd.run_args is a subset
# of cmd.args). Only the prefilter uses this; conditions still read the field itself.
# (Raw command text is never scanned: no rule may match substrings of it.)
SCAN_VIA: dict[str, str] = {
    "cmd.run_args": "cmd.args",
    # cmd.paths holds every path the command reads, writes, deletes or re-modes
    "cmd.reads": "cmd.paths",
    "cmd.writes": "cmd.paths",
    "cmd.deletes": "cmd.paths",
    "cmd.modes": "cmd.paths",
}


def known_fields() -> dict[str, tuple[str, str]]:
    return dict(_ALL)


def field_type(name: str) -> str | None:
    entry = _ALL.get(name)
    return entry[0] if entry else None


def implied_kinds(name: str) -> frozenset[str]:
    if name in _EVERY_KIND_FIELDS:
        return ALL_KINDS
    return _NAMESPACE_KINDS.get(name.split(".", 1)[0], ALL_KINDS)
