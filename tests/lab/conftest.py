"""The simulated internet, built once for the test session and torn down after it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bastion.lab import Lab


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    with Lab(f"bstlt{os.getpid() % 1000000}").active() as instance:
        yield instance


# No rule packs: these tests are about the gateway, so every attack must reach it
# (with the packs on, most are refused before they even start).
LAB_POLICY = {
    "name": "lab-test",
    "rules": {"packs": []},
    "network": {
        "initial_phase": "agent",
        "phases": {
            "setup": {"allow": [{"domain": "allowed.lab.test"}, {"domain": "denied.lab.test"}]},
            "agent": {"allow": [{"domain": "allowed.lab.test"},
                                {"domain": "*.allowed.lab.test", "port": 443}]},
        },
    },
}
