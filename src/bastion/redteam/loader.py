"""Load red-team scenarios from YAML, with errors that name file and line.

A scenario file holds ``scenarios:``, a list of mappings::

    scenarios:
      - id: attack.mining.stratum_plain
        kind: attack
        title: xmrig-style client speaks Stratum to the lab pool
        suites: [fast, full]
        hosts: [pool]
        variant: plain
        steps:
          - exec: "python3 miner.py"
            call: c1
            timeout: 20
          - wait: 1
        expect: {category: mining, charged_to: c1}

Optional keys: ``files`` (workspace seed), ``settle`` (seconds to wait for late
verdicts), ``why`` (what honest work a benign scenario stands for), ``allow`` (network
allow entries added to every phase) and ``policy`` (a patch deep-merged into the
scorecard policy, e.g. ``{rules: {detectors: {background_kill_cpu_seconds: 0.3}}}``: the
same attack under a setting a trainer may choose). Both are loaded into a real policy
when the file is read.

Unknown keys and wrong types are errors (``file:line: scenario X: ...``): a typo must
not silently turn an expectation off.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from .model import CATEGORIES, LAB_HOSTS, SUITES, Expect, Scenario, Step

__all__ = ["BUILTIN_DIR", "ScenarioError", "load_builtin", "load_file", "load_paths", "select"]

BUILTIN_DIR = Path(__file__).parent / "scenarios"

_SCENARIO_KEYS = {"id", "kind", "title", "suites", "hosts", "variant", "steps", "expect",
                  "files", "settle", "why", "allow", "policy"}
_STEP_KEYS = {"exec", "write_file", "wait", "trust_key", "call", "timeout", "expect_exit",
              "content"}
_ALLOW_KEYS = {"domain", "cidr", "port", "protocol"}
_EXPECT_KEYS = {"category", "accept", "charged_to", "forbidden", "alerts"}


class ScenarioError(ValueError):
    """A scenario file that cannot be used, with its position."""


class _Map(dict):  # type: ignore[type-arg]
    """A YAML mapping that remembers the line of itself and of each key."""

    line: int = 0
    key_lines: dict[str, int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    out = _Map()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[str(key)] = key_node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _err(file: str, line: int, who: str, message: str) -> ScenarioError:
    return ScenarioError(f"{file}:{line}: {who}{message}")


def _line(item: Any, key: str | None = None, default: int = 0) -> int:
    if isinstance(item, _Map):
        if key is not None and key in item.key_lines:
            return item.key_lines[key]
        return item.line
    return default


def _str_list(value: Any, file: str, line: int, who: str, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _err(file, line, who, f"{key}: expected a list of strings")
    return tuple(value)


def _check_keys(item: _Map, allowed: set[str], file: str, who: str, what: str) -> None:
    for key in item:
        if key not in allowed:
            raise _err(file, _line(item, str(key)), who,
                       f"{what}{key}: unknown key (allowed: {', '.join(sorted(allowed))})")


def _step(raw: Any, index: int, file: str, parent_line: int, who: str) -> Step:
    if not isinstance(raw, _Map):
        raise _err(file, parent_line, who, f"steps[{index}]: expected a mapping")
    _check_keys(raw, _STEP_KEYS, file, who, f"steps[{index}].")
    kinds = [k for k in ("exec", "write_file", "wait", "trust_key") if k in raw]
    if len(kinds) != 1:
        raise _err(file, raw.line, who,
                   f"steps[{index}]: needs exactly one of exec, write_file, wait, trust_key")
    kind = kinds[0]
    call = str(raw.get("call") or f"c{index}")
    timeout = raw.get("timeout")
    if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
        raise _err(file, _line(raw, "timeout"), who, f"steps[{index}].timeout: a positive number")
    expect_exit = raw.get("expect_exit")
    if expect_exit is not None and not isinstance(expect_exit, int):
        raise _err(file, _line(raw, "expect_exit"), who,
                   f"steps[{index}].expect_exit: an integer")
    if kind == "exec":
        if not isinstance(raw["exec"], str) or not raw["exec"].strip():
            raise _err(file, _line(raw, "exec"), who, f"steps[{index}].exec: a command line")
        return Step("exec", raw.line, command=raw["exec"], call=call,
                    timeout=float(timeout) if timeout else None, expect_exit=expect_exit)
    if kind == "write_file":
        if not isinstance(raw["write_file"], str) or not isinstance(raw.get("content"), str):
            raise _err(file, raw.line, who,
                       f"steps[{index}]: write_file needs a path and a string content")
        return Step("write_file", raw.line, path=raw["write_file"], content=raw["content"],
                    call=call)
    if kind == "trust_key":
        key = raw["trust_key"]
        if not isinstance(key, str) or not key.startswith("/workspace/") or ".." in key:
            raise _err(file, _line(raw, "trust_key"), who,
                       f"steps[{index}].trust_key: a public key file under /workspace/")
        return Step("trust_key", raw.line, path=key)
    seconds = raw["wait"]
    if not isinstance(seconds, int | float) or seconds < 0:
        raise _err(file, _line(raw, "wait"), who, f"steps[{index}].wait: seconds (>= 0)")
    return Step("wait", raw.line, seconds=float(seconds))


def _expect(raw: Any, kind: str, file: str, line: int, who: str, calls: list[str]) -> Expect:
    if raw is None:
        raw = _Map()
        raw.line, raw.key_lines = line, {}
    if not isinstance(raw, _Map):
        raise _err(file, line, who, "expect: expected a mapping")
    _check_keys(raw, _EXPECT_KEYS, file, who, "expect.")
    if kind == "benign":
        for key in ("category", "charged_to", "accept"):
            if key in raw:
                raise _err(file, _line(raw, key), who, f"expect.{key}: only for attacks")
        alerts = raw.get("alerts", {})
        if not isinstance(alerts, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in alerts.items()):
            raise _err(file, _line(raw, "alerts"), who,
                       "expect.alerts: a mapping rule id -> why the alert is justified")
        return Expect(alerts=dict(alerts))
    category = raw.get("category")
    if category not in CATEGORIES:
        raise _err(file, _line(raw, "category"), who,
                   f"expect.category: one of {', '.join(CATEGORIES)} (got {category!r})")
    charged = _str_list(raw.get("charged_to", []), file, _line(raw, "charged_to"), who,
                        "expect.charged_to")
    if not charged:
        raise _err(file, raw.line, who, "expect.charged_to: the call id the attack is charged to")
    for call in charged:
        if call not in calls:
            raise _err(file, _line(raw, "charged_to"), who,
                       f"expect.charged_to: {call!r} is not a call of this scenario "
                       f"(calls: {', '.join(calls)})")
    accept = _str_list(raw.get("accept", [category]), file, _line(raw, "accept"), who,
                       "expect.accept")
    forbidden = _str_list(raw.get("forbidden", ["ssh", "pool", "denied"]), file,
                          _line(raw, "forbidden"), who, "expect.forbidden")
    for host in forbidden:
        if host not in LAB_HOSTS:
            raise _err(file, _line(raw, "forbidden"), who,
                       f"expect.forbidden: unknown lab host {host!r} (have: {', '.join(LAB_HOSTS)})")
    return Expect(category=category, accept=tuple(dict.fromkeys((category, *accept))),
                  charged_to=charged, forbidden=forbidden)


def _scenario(raw: Any, file: str, seen: dict[str, str]) -> Scenario:
    if not isinstance(raw, _Map):
        raise ScenarioError(f"{file}: each scenario must be a mapping")
    line = raw.line
    sid = raw.get("id")
    if not isinstance(sid, str) or not sid:
        raise _err(file, line, "", "scenario without an id")
    who = f"scenario {sid}: "
    if sid in seen:
        raise _err(file, _line(raw, "id"), who, f"duplicate id (first at {seen[sid]})")
    seen[sid] = f"{file}:{line}"
    _check_keys(raw, _SCENARIO_KEYS, file, who, "")
    kind = raw.get("kind")
    if kind not in ("benign", "attack"):
        raise _err(file, _line(raw, "kind"), who, "kind: benign or attack")
    steps_raw = raw.get("steps")
    if not isinstance(steps_raw, list) or not steps_raw:
        raise _err(file, _line(raw, "steps"), who, "steps: a non-empty list")
    steps = tuple(_step(s, i, file, _line(raw, "steps"), who) for i, s in enumerate(steps_raw))
    calls = [s.call for s in steps if s.kind in ("exec", "write_file")]
    dupes = {c for c in calls if calls.count(c) > 1}
    if dupes:
        raise _err(file, _line(raw, "steps"), who, f"call ids used twice: {', '.join(sorted(dupes))}")
    suites = _str_list(raw.get("suites", ["full"]), file, _line(raw, "suites"), who, "suites")
    for suite in suites:
        if suite not in SUITES:
            raise _err(file, _line(raw, "suites"), who, f"suites: {suite!r} (have: fast, full)")
    if "fast" in suites and "full" not in suites:
        suites = (*suites, "full")
    hosts = _str_list(raw.get("hosts", []), file, _line(raw, "hosts"), who, "hosts")
    for host in hosts:
        if host not in LAB_HOSTS:
            raise _err(file, _line(raw, "hosts"), who,
                       f"hosts: unknown lab host {host!r} (have: {', '.join(LAB_HOSTS)})")
    files = raw.get("files", {})
    if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise _err(file, _line(raw, "files"), who, "files: a mapping path -> text")
    for path in files:
        if path.startswith("/") or ".." in Path(path).parts:
            raise _err(file, _line(raw, "files"), who,
                       f"files: {path!r} must be relative to the workspace")
    variant = raw.get("variant", "plain")
    if variant not in ("plain", "evasive"):
        raise _err(file, _line(raw, "variant"), who, "variant: plain or evasive")
    settle = raw.get("settle", 1.0)
    if not isinstance(settle, int | float) or settle < 0:
        raise _err(file, _line(raw, "settle"), who, "settle: seconds (>= 0)")
    allow = _allow(raw.get("allow", []), file, _line(raw, "allow", line), who)
    patch = _policy_patch(raw.get("policy", {}), allow, file, _line(raw, "policy", line), who)
    return Scenario(
        id=sid, kind=kind, title=str(raw.get("title") or sid), file=file, line=line,
        steps=steps, expect=_expect(raw.get("expect"), kind, file, _line(raw, "expect", line),
                                    who, calls),
        suites=suites, hosts=hosts, variant=variant, files=dict(files), settle=float(settle),
        why=str(raw.get("why", "")), allow=allow, policy=patch)


def _plain(value: Any) -> Any:
    """``value`` with the loader's line-tracking mappings turned into plain dicts."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _policy_patch(raw: Any, allow: tuple[dict[str, object], ...], file: str, line: int,
                  who: str) -> dict[str, Any]:
    """A scenario's policy patch, checked by loading the patched scorecard policy now:
    an unknown setting must fail at load, not silently leave the default in force."""
    if not isinstance(raw, dict):
        raise _err(file, line, who, "policy: a mapping merged into the scorecard policy")
    patch = _plain(raw)
    if patch:
        import warnings

        from ..policy import Policy
        from .runner import base_policy, merge_policy, with_allow

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                Policy.from_dict(merge_policy(with_allow(base_policy(), allow), patch),
                                 source=f"{file}:{line}")
        except Exception as exc:  # noqa: BLE001 - any policy error is a scenario error here
            raise _err(file, line, who, f"policy: {exc}") from None
    return patch


def _allow(raw: Any, file: str, line: int, who: str) -> tuple[dict[str, object], ...]:
    """Extra allow entries, checked by loading them into the scorecard policy now: a
    typo must fail at load, not turn into a deny at run time."""
    if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
        raise _err(file, line, who, "allow: a list of allow entries (domain/cidr, port, protocol)")
    for entry in raw:
        unknown = set(entry) - _ALLOW_KEYS
        if unknown:
            raise _err(file, line, who, f"allow: unknown key {min(unknown)!r} "
                                        f"(allowed: {', '.join(sorted(_ALLOW_KEYS))})")
    entries = tuple(dict(e) for e in raw)
    if entries:
        import warnings

        from ..policy import Policy
        from .runner import base_policy, with_allow

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                Policy.from_dict(with_allow(base_policy(), entries), source=f"{file}:{line}")
        except Exception as exc:  # noqa: BLE001 - any policy error is a scenario error here
            raise _err(file, line, who, f"allow: {exc}") from None
    return entries


def load_file(path: str | Path, seen: dict[str, str] | None = None) -> list[Scenario]:
    """Every scenario of one file; raises ScenarioError naming file:line."""
    path = Path(path)
    name = str(path)
    try:
        data = yaml.load(path.read_text(), Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else 0
        raise ScenarioError(f"{name}:{line}: {exc.problem}") from None
    if not isinstance(data, _Map) or not isinstance(data.get("scenarios"), list):
        raise ScenarioError(f"{name}:1: expected a mapping with a 'scenarios:' list")
    unknown = [k for k in data if k != "scenarios"]
    if unknown:
        raise ScenarioError(f"{name}:{_line(data, unknown[0])}: {unknown[0]}: unknown key")
    seen = {} if seen is None else seen
    return [_scenario(item, name, seen) for item in data["scenarios"]]


def load_paths(paths: Iterable[str | Path]) -> list[Scenario]:
    """Scenarios of files and directories (``*.yaml`` inside, sorted); ids are unique."""
    seen: dict[str, str] = {}
    out: list[Scenario] = []
    for path in paths:
        path = Path(path)
        files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
        for file in files:
            out.extend(load_file(file, seen))
    return out


def load_builtin() -> list[Scenario]:
    return load_paths([BUILTIN_DIR])


def select(scenarios: Iterable[Scenario], *, suite: str = "full",
           patterns: Iterable[str] = ()) -> list[Scenario]:
    """Scenarios of ``suite`` whose id, kind, category or variant matches every pattern
    (shell-style globs on the id, or a plain word such as ``mining`` or ``benign``); a
    pattern with commas matches any of its parts (``git,mining``)."""
    from fnmatch import fnmatch

    pats = [p for p in patterns if p]
    out = []
    for sc in scenarios:
        if suite not in sc.suites:
            continue
        words = {sc.id, sc.kind, sc.category, sc.variant}
        if all(any(fnmatch(w, alt) or fnmatch(w, f"*{alt}*")
                   for alt in p.split(",") if alt for w in words) for p in pats):
            out.append(sc)
    return out
