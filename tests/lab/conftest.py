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
        # TLS to allowed names is terminated and inspected, as in the scorecard policy
        "tls_inspect": True,
        "phases": {
            "setup": {"allow": [{"domain": "allowed.lab.test"}, {"domain": "denied.lab.test"}]},
            "agent": {"allow": [{"domain": "allowed.lab.test"},
                                {"domain": "*.allowed.lab.test", "port": 443}]},
        },
    },
}


def lab_trust(lab: Lab) -> str:
    """What a test client told to trust "the lab" must trust with TLS inspection on:
    the lab's CA and this process's interception CA (the scorecard's ``LAB_CA``)."""
    from bastion.gateway.intercept import authority

    return lab.ca_path.read_text() + authority().pem
