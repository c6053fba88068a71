"""The sandbox tests exercise the sandbox layer on its own: sessions here load no rule
packs, so an attack reaches the kernel (seccomp, namespaces, cgroups, mounts) instead
of being refused earlier by a rule. The full pipeline is tested elsewhere; each layer
must hold by itself."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bastion import Policy, Session


def _without_packs(policy: Policy | dict | None) -> Policy:
    if isinstance(policy, Policy):
        data = policy.model.model_dump(mode="json")
    else:
        data = dict(policy or {})
    data.setdefault("rules", {})
    data["rules"] = {**data["rules"], "packs": []}
    return Policy.from_dict(data)


@pytest.fixture
def make_session(state_dir: Path) -> Iterator[Callable[..., Session]]:
    sessions: list[Session] = []

    def make(policy: Policy | dict | None = None, **kwargs: object) -> Session:
        kwargs.setdefault("state_dir", state_dir)
        s = Session(_without_packs(policy), **kwargs)  # type: ignore[arg-type]
        sessions.append(s)
        return s

    yield make
    for s in sessions:
        s.close()
