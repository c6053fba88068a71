"""The simulated internet, built once for the test session and torn down after it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bastion.lab import Lab


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    name = f"bstlt{os.getpid() % 1000000}"
    previous = os.environ.get("BASTION_LAB")
    os.environ["BASTION_LAB"] = name  # Session(lab=True) finds the lab by this name
    instance = Lab(name)
    try:
        instance.up()
        yield instance
    finally:
        instance.down()
        if previous is None:
            os.environ.pop("BASTION_LAB", None)
        else:
            os.environ["BASTION_LAB"] = previous


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
