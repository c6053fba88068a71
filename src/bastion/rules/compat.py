"""Rule-pack compatibility check: what changed since a release, and is it breaking?

Adopters tune rules by id (policy ``overrides``), lists and macros by name, and expect
a rule that fired yesterday to fire as loudly today. So, comparing old packs to new:

* breaking: a rule, list or macro removed (or renamed, which is the same thing); a rule
  disabled by default; a rule's severity lowered; MITRE tags dropped; a pack's
  ``requires_engine`` raised;
* not breaking: additions, raised severity, new tags, changed conditions or text.

Usage::

    python -m bastion.rules.compat --git-ref v0.1.0          # built-in packs vs a release
    python -m bastion.rules.compat OLD_DIR [NEW_DIR]          # two directories of packs

Exit status 1 when anything breaking changed (CI fails the change unless the release
notes call it out), 0 otherwise.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..events import Severity
from .loader import PackSource, _parse_pack, builtin_pack_names, builtin_pack_source
from .loader_source import vocabulary_source

__all__ = ["Change", "compare", "main"]


@dataclass(frozen=True)
class Change:
    kind: str
    item: str
    detail: str
    breaking: bool

    def __str__(self) -> str:
        flag = "BREAKING" if self.breaking else "ok"
        return f"{flag:<8} {self.kind:<18} {self.item}: {self.detail}"


def _inventory(sources: Sequence[PackSource]) -> dict[str, Any]:
    rules: dict[str, dict[str, Any]] = {}
    names: dict[str, set[str]] = {"list": set(), "macro": set()}
    engines: dict[str, int] = {}
    for src in sources:
        text = src.text
        for line in text.splitlines():
            if line.startswith("- requires_engine:"):
                engines[src.name] = int(line.split(":", 1)[1])
                break
        for item in _parse_pack(src, check_engine=False):
            if item.kind == "rule":
                rules[item.name] = item.values
            else:
                names[item.kind].add(item.name)
    return {"rules": rules, "names": names, "engines": engines}


def compare(old: Sequence[PackSource], new: Sequence[PackSource]) -> list[Change]:
    a, b = _inventory(old), _inventory(new)
    out: list[Change] = []
    for rid, before in sorted(a["rules"].items()):
        after = b["rules"].get(rid)
        if after is None:
            out.append(Change("rule_removed", rid, "removed or renamed", True))
            continue
        if before.get("enabled", True) and not after.get("enabled", True):
            out.append(Change("rule_disabled", rid, "disabled by default", True))
        s0, s1 = Severity.parse(before["severity"]), Severity.parse(after["severity"])
        if s1 < s0:
            out.append(Change("severity_lowered", rid, f"{s0} -> {s1}", True))
        elif s1 > s0:
            out.append(Change("severity_raised", rid, f"{s0} -> {s1}", False))
        dropped = {t for t in before.get("tags", []) if str(t).startswith("T")} - set(
            map(str, after.get("tags", [])))
        if dropped:
            out.append(Change("tags_dropped", rid, ", ".join(sorted(dropped)), True))
        if before.get("condition") != after.get("condition"):
            out.append(Change("condition_changed", rid, "condition edited", False))
    for rid in sorted(set(b["rules"]) - set(a["rules"])):
        out.append(Change("rule_added", rid, "new rule", False))
    for kind in ("list", "macro"):
        for name in sorted(a["names"][kind] - b["names"][kind]):
            out.append(Change(f"{kind}_removed", name, "removed or renamed", True))
    for pack, version in sorted(b["engines"].items()):
        if version > a["engines"].get(pack, version):
            out.append(Change("engine_raised", pack,
                              f"requires_engine {a['engines'][pack]} -> {version}", True))
    return out


def _dir_sources(path: Path) -> list[PackSource]:
    return [PackSource(p.stem, str(p), p.read_text()) for p in sorted(path.glob("*.yaml"))]


def _git_sources(ref: str) -> list[PackSource]:
    rel = "src/bastion/rules/packs"
    listing = subprocess.run(["git", "ls-tree", "--name-only", f"{ref}:{rel}"],
                             capture_output=True, text=True, check=True).stdout.split()
    out = []
    for name in listing:
        if name.endswith(".yaml"):
            text = subprocess.run(["git", "show", f"{ref}:{rel}/{name}"], capture_output=True,
                                  text=True, check=True).stdout
            out.append(PackSource(name[:-5], f"{ref}:{rel}/{name}", text))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bastion.rules.compat", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old", nargs="?", type=Path, help="directory with the released packs")
    ap.add_argument("new", nargs="?", type=Path, help="directory with the new packs "
                    "(default: the built-in packs)")
    ap.add_argument("--git-ref", help="read the released packs from this git ref instead")
    args = ap.parse_args(argv)
    if args.git_ref:
        old = _git_sources(args.git_ref)
    elif args.old:
        old = _dir_sources(args.old)
    else:
        ap.error("give OLD_DIR or --git-ref")
    new = (_dir_sources(args.new) if args.new
           else [builtin_pack_source(n) for n in builtin_pack_names()])
    if not args.new:  # the shared vocabulary's lists are the packs' lists too
        vocab = vocabulary_source()
        new.append(PackSource(vocab.name, vocab.file, vocab.text))
    changes = compare(old, new)
    for change in changes:
        print(change)
    breaking = [c for c in changes if c.breaking]
    print(f"{len(changes)} change(s), {len(breaking)} breaking")
    return 1 if breaking else 0


if __name__ == "__main__":
    sys.exit(main())
