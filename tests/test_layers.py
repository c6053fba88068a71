"""Control flows one way: the parts that serve a session never reach back into it.

Sensors, the gateway, the responder, the engine and the host hold a ``Watched`` view
and an ``EventSink`` (``bastion.contracts``), never a ``Session``. This walks their
source (imports under ``TYPE_CHECKING`` included, since they are how a cycle starts)
and fails on any import of ``bastion.session``. The contracts themselves must stay a
leaf.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import bastion

SRC = Path(bastion.__file__).parent
LAYERS = ["sensors", "gateway", "respond", "engine", "host.py"]
# what the contracts module may import (beyond the standard library)
CONTRACTS_MAY_IMPORT = {"bastion.events", "bastion.policy", "bastion.sandbox.cgroups"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module_name: str | None = None) -> set[str]:
    """Every bastion module ``path`` imports, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = (module_name or _module_name(path)).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in found if m == "bastion" or m.startswith("bastion.")}


def _files(layer: str) -> list[Path]:
    target = SRC / layer
    return [target] if target.is_file() else sorted(target.rglob("*.py"))


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_never_imports_the_session(layer: str) -> None:
    offenders = {str(p.relative_to(SRC)): sorted(m for m in _imports(p)
                                                 if m == "bastion.session"
                                                 or m.startswith("bastion.session."))
                 for p in _files(layer)}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"{layer} reaches back into the session: {offenders}"


def test_contracts_are_a_leaf() -> None:
    imported = _imports(SRC / "contracts.py")
    assert imported <= CONTRACTS_MAY_IMPORT | {"bastion.events.Action", "bastion.events.Event",
                                               "bastion.events.EventKind",
                                               "bastion.events.Verdict",
                                               "bastion.policy.Policy",
                                               "bastion.sandbox.cgroups.SessionCgroup"}, imported


def test_the_walker_sees_type_checking_and_relative_imports(tmp_path: Path) -> None:
    # the test above is only as good as this: a guarded relative import is an import
    sample = tmp_path / "probe.py"
    sample.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                      "    from ..session import Session\n")
    assert "bastion.session" in _imports(sample, "bastion.sensors.probe")
    sample.write_text("import bastion.session\n")
    assert "bastion.session" in _imports(sample, "bastion.gateway.probe")
