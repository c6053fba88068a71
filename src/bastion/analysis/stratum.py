"""Stratum, the mining-pool protocol, as static analysis recognises it in text.

One module owns these facts so that every reader of code and commands agrees on them:
interpreter code (analysis/interp.py: a program that connects and carries a Stratum
method is a pool client) and shell builtins (analysis/analyzer.py: ``printf`` of a
Stratum request into ``/dev/tcp``/``nc``) both import from here.

A Stratum request is JSON-RPC whose ``method`` is one of the pool's own verbs
(``mining.subscribe``, ``mining.authorize``, ``mining.submit``...), or the
XMRig/Monero-style ``login``/``submit``/``getjob`` carried with a miner's own fields
(``agent``, ``pass``, ``rigid``, ``job_id``, ``nonce``). The bare words ``login`` or
``submit`` alone are ordinary JSON and are not Stratum.
"""

from __future__ import annotations

import re

__all__ = ["STRATUM_METHOD"]

# A Stratum method named in text (case-insensitive): a request a client sends.
STRATUM_METHOD = re.compile(
    r"mining\.(?:subscribe|authorize|submit|extranonce\.subscribe)\b"
    r"|[\"']method[\"']\s*:\s*[\"'](?:login|submit|getjob)[\"']"
    r"[^\n]{0,200}[\"'](?:agent|pass|rigid|job_id|nonce)[\"']",
    re.IGNORECASE)

