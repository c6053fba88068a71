"""Event fields the gateway emits beyond ``events.FIELD_CATALOGUE`` (to be merged there).

Kept here, in one dict, until the catalogue owner adds them, so rules can already be
checked against the full set with ``catalogue()``.
"""

from __future__ import annotations

from ..events import FIELD_CATALOGUE

__all__ = ["FIELD_EXTENSIONS", "catalogue"]

FIELD_EXTENSIONS: dict[str, tuple[str, str]] = {
    "net.reason": ("str", "why the gateway decided as it did, one line for humans"),
    "net.cut": ("str", "why the gateway cut a live connection (e.g. a phase switch)"),
    "net.packets": ("int", "packets dropped by the session firewall since the last report"),
    "net.error": ("str", "malformed first bytes, or why the upstream could not be reached"),
    "net.dialled": ("str", "the name the gateway dialled itself (TLS SNI / HTTP Host)"),
    "net.upstream": ("str", "where allowed traffic went: host, or lab:<name>"),
    "dns.rcode": ("str", "the resolver's answer: NOERROR, NODATA, NXDOMAIN, SERVFAIL, FORMERR"),
}


def catalogue() -> dict[str, tuple[str, str]]:
    """The field catalogue with the gateway's additions."""
    return {**FIELD_CATALOGUE, **FIELD_EXTENSIONS}
