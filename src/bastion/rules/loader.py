"""Read rule packs (YAML) and compile them; every mistake names file:line:column.

A pack is a YAML list of items::

    - requires_engine: 1                 # must come first; newer packs refuse to load
    - list: miner_binaries               # named values; `append: true` extends a list
      items: [xmrig, minerd]
    - macro: miner_name                  # a named condition fragment
      condition: cmd.names in (miner_binaries)
    - rule: mining.miner_binary          # unique id
      desc: what it detects, why, how noisy, how to tune
      condition: miner_name and not cmd.names in (allowed_miners)
      output: "miner started: %cmd.raw"  # %field substitution
      severity: critical                 # info | low | medium | high | critical
      tags: [T1496, mining]              # MITRE ids (T####[.###]) become RuleMatch.mitre
      categories: [mining]
      maturity: stable                   # stable | incubating | sandbox | deprecated
      action: kill                       # optional override of the severity mapping
      kinds: [command]                   # optional; else from `kind in (...)` or fields
      exceptions: ["cmd.names in (bench)"]  # conditions under which the rule is silent
      enabled: true
      tests: {match: ["xmrig -o ..."], no_match: ["ls"]}

Lists, macros and rule ids share one namespace across all loaded files. All items are
collected before anything compiles, so order between files does not matter and a list
appended by a later file is seen by rules of an earlier one.

The shared vocabulary (``vocabulary.yaml``: shells, interpreters, downloaders, network
clients, credential paths...) is always compiled first, so every pack and every policy
file can name its lists. The list ``grader_paths`` is filled from the policy (its
``sandbox.protected`` paths, resolved against the workspace), so reward-integrity rules
match acts on the policy's grader, not on file names.

Rules judge parsed facts, never spellings: a string operator (contains, icontains,
startswith, endswith, glob, regex) on the raw text of a command or process
(``RAW_TEXT_FIELDS``) is a load error, and on ``cmd.argv`` (one decoded simple command
per element) only a regex anchored at the program (``^...``) or ``startswith`` is
accepted. Use ``cmd.args``, ``cmd.subcommands``, ``cmd.paths``, ``cmd.writes``,
``cmd.hosts``, ``cmd.features``, ``proc.args``... instead.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import PolicyError
from ..events import Action, Severity
from .compile import compile_node, guard, node_fields, node_kinds
from .condition import And, ConditionSyntaxError, Node, Not, parse_condition
from .condition import Cmp
from .fields import ALL_KINDS, known_fields
from .loader_source import vocabulary_source
from .ruleset import Rule, RuleSet

__all__ = [
    "ENGINE_VERSION",
    "RAW_TEXT_FIELDS",
    "grader_lists",
    "grader_paths",
    "PackSource",
    "builtin_pack_names",
    "builtin_pack_source",
    "compile_sources",
    "load_ruleset",
]

ENGINE_VERSION = 1
# Free text of a command line or process: no rule may match substrings of these.
RAW_TEXT_FIELDS = frozenset({"cmd.raw", "cmd.text", "cmd.payloads", "cmd.interp_code",
                             "proc.cmdline", "proc.pcmdline"})
_SUBSTRING_OPS = frozenset({"contains", "icontains", "startswith", "endswith", "glob", "regex"})
_ANCHORED = re.compile(r"^(?:\(\?[aiLmsux]+\))?\^")
_MITRE = re.compile(r"^T\d{4}(?:\.\d{3})?$")
_RULE_ID = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_MATURITY = ("stable", "incubating", "sandbox", "deprecated")
_RULE_KEYS = {
    "rule", "desc", "condition", "output", "severity", "tags", "categories", "maturity",
    "action", "kinds", "exceptions", "enabled", "tests",
}
_LIST_KEYS = {"list", "items", "append"}
_MACRO_KEYS = {"macro", "condition"}


# libyaml's composer when PyYAML has it (22x faster on the rule packs, which every
# `bastion check` and session start parses); its nodes carry the same line marks.
_COMPOSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class PackSource:
    name: str
    file: str
    text: str


def builtin_pack_names() -> list[str]:
    root = resources.files("bastion.rules") / "packs"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def builtin_pack_source(name: str) -> PackSource:
    root = resources.files("bastion.rules") / "packs"
    path = root / f"{name}.yaml"
    if not _NAME.match(name) or not path.is_file():
        raise PolicyError(
            f"unknown rule pack {name!r} (built-in: {', '.join(builtin_pack_names())})",
            key="rules.packs")
    return PackSource(name, str(path), path.read_text())


# ---------------------------------------------------------------- positions


@dataclass(frozen=True)
class _Where:
    """A YAML scalar in a file: maps an offset in its value back to line:column."""

    file: str
    text: str
    node: yaml.Node

    def at(self, offset: int | None = None) -> tuple[int, int]:
        mark = self.node.start_mark
        if offset is None or not isinstance(self.node, yaml.ScalarNode):
            return mark.line + 1, mark.column + 1
        value = str(self.node.value)
        nonws = sum(1 for ch in value[:offset] if not ch.isspace())
        i = mark.index
        if self.node.style in ("|", ">"):
            i = self.text.find("\n", i) + 1
        elif self.node.style in ('"', "'"):
            i += 1
        end = self.node.end_mark.index
        seen = 0
        while i < end and (seen < nonws or self.text[i].isspace()):
            if not self.text[i].isspace():
                seen += 1
            i += 1
        line = self.text.count("\n", 0, i)
        col = i - (self.text.rfind("\n", 0, i) + 1)
        return line + 1, col + 1

    def error(self, message: str, offset: int | None = None, key: str | None = None) -> PolicyError:
        line, col = self.at(offset)
        return PolicyError(message, file=self.file, line=line, column=col, key=key)


@dataclass
class _Item:
    kind: str  # list | macro | rule
    name: str
    values: dict[str, Any]
    nodes: dict[str, yaml.Node]
    key_nodes: dict[str, yaml.Node]
    src: PackSource
    pack: str
    node: yaml.Node

    def where(self, key: str) -> _Where:
        return _Where(self.src.file, self.src.text, self.nodes.get(key, self.node))


def _construct(node: yaml.Node) -> Any:
    return yaml.SafeLoader("").construct_object(node, deep=True)


def _parse_pack(src: PackSource, *, check_engine: bool = True) -> list[_Item]:
    try:
        root = yaml.compose(src.text, Loader=_COMPOSER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise PolicyError(f"not valid YAML: {exc.problem}", file=src.file,
                          line=mark.line + 1 if mark else None,
                          column=mark.column + 1 if mark else None) from exc
    if root is None or not isinstance(root, yaml.SequenceNode):
        raise PolicyError("a rule pack is a YAML list of items", file=src.file, line=1, column=1)
    items: list[_Item] = []
    engine_seen = False
    for idx, node in enumerate(root.value):
        if not isinstance(node, yaml.MappingNode):
            raise _Where(src.file, src.text, node).error("each item must be a mapping")
        values: dict[str, Any] = {}
        nodes: dict[str, yaml.Node] = {}
        keys: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in values:
                raise _Where(src.file, src.text, key_node).error("duplicate key", key=key)
            values[key] = _construct(value_node)
            nodes[key] = value_node
            keys[key] = key_node
        kinds = [k for k in ("requires_engine", "list", "macro", "rule") if k in values]
        if len(kinds) != 1:
            raise _Where(src.file, src.text, node).error(
                "an item needs exactly one of: requires_engine, list, macro, rule")
        kind = kinds[0]
        if kind == "requires_engine":
            version = values["requires_engine"]
            if idx != 0 or len(values) != 1:
                raise _Where(src.file, src.text, node).error(
                    "requires_engine must be the first item, on its own")
            if not isinstance(version, int) or isinstance(version, bool):
                raise _Where(src.file, src.text, nodes[kind]).error(
                    "requires_engine must be an integer", key=kind)
            if check_engine and version > ENGINE_VERSION:
                raise _Where(src.file, src.text, nodes[kind]).error(
                    f"pack needs rule engine {version}; this bastion has {ENGINE_VERSION}",
                    key=kind)
            engine_seen = True
            continue
        allowed = {"list": _LIST_KEYS, "macro": _MACRO_KEYS, "rule": _RULE_KEYS}[kind]
        for key in values:
            if key not in allowed:
                raise _Where(src.file, src.text, keys[key]).error(
                    f"unknown key in {kind} (allowed: {', '.join(sorted(allowed))})", key=key)
        name = values[kind]
        pattern = _RULE_ID if kind == "rule" else _NAME
        if not isinstance(name, str) or not pattern.match(name):
            raise _Where(src.file, src.text, nodes[kind]).error(
                f"bad {kind} name {name!r}", key=kind)
        items.append(_Item(kind, name, values, nodes, keys, src, src.name, node))
    if not engine_seen:
        raise PolicyError("a rule pack must start with `- requires_engine: N`",
                          file=src.file, line=1, column=1)
    return items


# ---------------------------------------------------------------- compilation


@dataclass
class _Namespace:
    lists: dict[str, list[str]] = field(default_factory=dict)
    macro_items: dict[str, _Item] = field(default_factory=dict)
    macros: dict[str, Node] = field(default_factory=dict)
    resolving: set[str] = field(default_factory=set)
    fields: dict[str, tuple[str, str]] = field(default_factory=known_fields)

    def parse(self, text: str, where: _Where, key: str) -> Node:
        try:
            return parse_condition(text, is_field=self.fields.__contains__, lists=self.lists,
                                   macros=self.macro, source=where)
        except ConditionSyntaxError as exc:
            src = exc.source if isinstance(exc.source, _Where) else where
            raise src.error(str(exc), exc.offset, key=key) from None

    def macro(self, name: str) -> Node | None:
        if name in self.macros:
            return self.macros[name]
        item = self.macro_items.get(name)
        if item is None:
            return None
        if name in self.resolving:
            raise ConditionSyntaxError(f"macro {name!r} refers to itself", 0,
                                       item.where("condition"))
        self.resolving.add(name)
        try:
            text = item.values.get("condition")
            if not isinstance(text, str):
                raise item.where("condition").error("macro needs a condition string")
            node = self.parse(text, item.where("condition"), "condition")
        finally:
            self.resolving.discard(name)
        self.macros[name] = node
        return node


def raw_text_violation(node: Node) -> Cmp | None:
    """The first comparison that matches a substring of raw command text, or None."""
    if isinstance(node, Cmp):
        if node.op in _SUBSTRING_OPS and node.field in RAW_TEXT_FIELDS:
            return node
        if node.field == "cmd.argv" and node.op in _SUBSTRING_OPS and not (
                node.op == "startswith" or (node.op == "regex" and all(
                    _ANCHORED.match(v) for v in node.values))):
            return node
        return None
    if isinstance(node, Not):
        return raw_text_violation(node.item)
    for item in node.items:  # And / Or
        found = raw_text_violation(item)
        if found is not None:
            return found
    return None


def _raw_text_message(cmp: Cmp) -> str:
    if cmp.field == "cmd.argv":
        return (f"cmd.argv {cmp.op} matches across a command's text; use a regex anchored "
                "at the program (^prog ...), or parsed fields (cmd.args, cmd.subcommands, "
                "cmd.paths, cmd.writes, cmd.hosts)")
    return (f"{cmp.field} {cmp.op}: rules may not match substrings of raw command text; "
            "use parsed fields (cmd.names, cmd.args, cmd.subcommands, cmd.paths, cmd.writes, "
            "cmd.hosts, cmd.urls, cmd.features, proc.args, proc.exe)")


def grader_paths(policy: Any) -> list[str]:
    """The grader's paths of a policy (``sandbox.protected``), resolved as the sandbox
    sees them (relative paths and ``~`` are in the workspace)."""
    from .compile import resolve_path

    sandbox = getattr(policy, "sandbox", None)
    out: list[str] = []
    for raw in list(getattr(sandbox, "protected", None) or []):
        if isinstance(raw, str) and raw.strip():
            out.append(resolve_path(raw.strip()))
    return list(dict.fromkeys(out))


# pytest reads its options from the first of these found upward from its rootdir.
_PYTEST_CONFIG_NAMES = ("pytest.ini", ".pytest.ini", "tox.ini", "setup.cfg", "pyproject.toml")
# Modules that stand in for pytest itself when found first on sys.path: the directory
# `python -m pytest` runs in and the tests' rootdir (prepend import mode) are on it.
_PYTEST_SHADOW_NAMES = ("pytest.py", "pytest", "_pytest.py", "_pytest", "py.py", "pluggy.py",
                        "pluggy", "iniconfig.py", "iniconfig")


def grader_lists(policy: Any) -> dict[str, list[str]]:
    """The lists the reward-integrity rules read, computed from the policy:

    * ``grader_paths``: the protected paths;
    * ``grader_conftests``: every ``conftest.py`` pytest would load when it runs tests
      under a grader path (one in each ancestor directory of the grader path);
    * ``grader_pytest_configs``: the pytest configuration files (pytest.ini, tox.ini,
      setup.cfg, pyproject.toml) in those directories, one of which pytest reads;
    * ``grader_pytest_shadows``: modules in those directories that would be imported
      instead of pytest (or its dependencies) by the grader's run;
    * ``grader_hidden_paths``: paths this policy hides beyond bastion's own
      (``sandbox.hidden`` minus the always-hidden ones): hidden answers and tests.
    """
    from .compile import resolve_path

    graders = grader_paths(policy)
    conftests: list[str] = []
    configs: list[str] = []
    shadows: list[str] = []
    for g in graders:
        parts = g.strip("/").split("/")
        for i in range(len(parts) + 1):
            d = "/" + "/".join(parts[:i])
            base = d.rstrip("/") + "/"
            conftests.append(base + "conftest.py")
            configs.extend(base + n for n in _PYTEST_CONFIG_NAMES)
            shadows.extend(base + n for n in _PYTEST_SHADOW_NAMES)
    sandbox = getattr(policy, "sandbox", None)
    try:
        from ..policy.sandbox import ALWAYS_HIDDEN
    except ImportError:  # pragma: no cover
        ALWAYS_HIDDEN = ()
    hidden = [resolve_path(h) for h in list(getattr(sandbox, "hidden", None) or [])
              if isinstance(h, str) and h.strip() and h not in ALWAYS_HIDDEN]
    return {"grader_paths": graders, "grader_conftests": list(dict.fromkeys(conftests)),
            "grader_pytest_configs": list(dict.fromkeys(configs)),
            "grader_pytest_shadows": list(dict.fromkeys(shadows)),
            "grader_hidden_paths": list(dict.fromkeys(hidden)),
            "ssh_allowed_hosts": ssh_allowed_hosts(policy),
            "egress_allowed_hosts": egress_allowed_domains(policy),
            "package_index_allowed": [f"index_host:{d}" for d in egress_allowed_domains(policy)]}


def egress_allowed_domains(policy: Any) -> list[str]:
    """Domains (globs) the policy lets the agent reach in any phase, any protocol: a
    package index there is one the task may use (persistence.package_index_redirect), an
    upload there is one the task was granted (exfil.http_upload)."""
    network = getattr(policy, "network", None)
    out: list[str] = []
    for phase in (getattr(network, "phases", None) or {}).values():
        for entry in getattr(phase, "allow", None) or []:
            domain = getattr(entry, "domain", None)
            if domain:
                out.append(str(domain).lower())
    return list(dict.fromkeys(out))


def ssh_allowed_hosts(policy: Any) -> list[str]:
    """Hosts (domain globs) the policy lets the agent reach over SSH in any phase
    (entries with protocol ssh, tcp or any): copying an ordinary file there is the use
    the policy granted, not exfiltration (the exfil rules still judge secrets)."""
    network = getattr(policy, "network", None)
    out: list[str] = []
    for phase in (getattr(network, "phases", None) or {}).values():
        for entry in getattr(phase, "allow", None) or []:
            domain = getattr(entry, "domain", None)
            if domain and getattr(entry, "protocol", None) in ("ssh", "tcp", "any"):
                out.append(str(domain).lower())
    return list(dict.fromkeys(out))


def _str_list(item: _Item, key: str) -> list[str]:
    value = item.values.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise item.where(key).error(f"{key} must be a list of strings", key=key)
    return [str(v) for v in value]


def compile_sources(sources: Sequence[PackSource], *, policy_hash: str = "",
                    overrides: Sequence[Any] = (), policy_file: str | None = None,
                    use_automaton: bool = True,
                    grader: Mapping[str, Sequence[str]] | None = None) -> RuleSet:
    """Compile packs (and apply policy overrides) into a RuleSet.

    The vocabulary is compiled first unless ``sources`` already holds it; ``grader``
    (see ``grader_lists``) extends the vocabulary's grader lists.
    """
    items: list[_Item] = []
    if not any(s.name == "vocabulary" for s in sources):
        vocab = vocabulary_source()
        sources = [PackSource(vocab.name, vocab.file, vocab.text), *sources]
    for src in sources:
        items.extend(_parse_pack(src))
    ns = _Namespace()
    # Lists first (with appends), then macros by name, then rules in file order.
    for item in items:
        if item.kind != "list":
            continue
        values = _str_list(item, "items")
        append = item.values.get("append", False)
        if append:
            if item.name not in ns.lists:
                raise item.where("list").error(f"append to unknown list {item.name!r}",
                                               key="list")
            ns.lists[item.name].extend(values)
        else:
            if item.name in ns.lists:
                raise item.where("list").error(f"list {item.name!r} is defined twice",
                                               key="list")
            ns.lists[item.name] = values
    for list_name, values in (grader or {}).items():
        ns.lists.setdefault(list_name, []).extend(values)
    for item in items:
        if item.kind == "macro":
            if item.name in ns.macro_items or item.name in ns.lists:
                raise item.where("macro").error(f"name {item.name!r} is defined twice",
                                                key="macro")
            if "." in item.name or item.name in ns.fields:
                raise item.where("macro").error("macro names may not look like fields",
                                                key="macro")
            ns.macro_items[item.name] = item
    for name in ns.macro_items:  # every macro must compile, used or not
        ns.macro(name)
    rules: list[Rule] = []
    seen: dict[str, _Item] = {}
    for item in items:
        if item.kind != "rule":
            continue
        if item.name in seen:
            raise item.where("rule").error(f"rule id {item.name!r} is defined twice",
                                           key="rule")
        seen[item.name] = item
        rules.append(_compile_rule(item, ns))
    by_id = {r.id: r for r in rules}
    for i, ov in enumerate(overrides):
        _apply_override(by_id, ov, i, ns, policy_file)
    packs = list(dict.fromkeys(s.name for s in sources if s.name != "vocabulary"))
    return RuleSet(rules, policy_hash=policy_hash, packs=packs, use_automaton=use_automaton)


def _compile_rule(item: _Item, ns: _Namespace) -> Rule:
    v = item.values
    for required in ("desc", "condition", "severity"):
        if required not in v:
            raise _Where(item.src.file, item.src.text, item.node).error(
                f"rule {item.name!r} needs `{required}`", key=required)
    if not isinstance(v["desc"], str) or not v["desc"].strip():
        raise item.where("desc").error("desc must be a non-empty string", key="desc")
    if not isinstance(v["condition"], str):
        raise item.where("condition").error("condition must be a string", key="condition")
    node = ns.parse(v["condition"], item.where("condition"), "condition")
    bad = raw_text_violation(node)
    if bad is not None:
        where = bad.source if isinstance(bad.source, _Where) else item.where("condition")
        raise where.error(_raw_text_message(bad), bad.offset, key="condition")
    try:
        severity = Severity.parse(v["severity"])
    except (ValueError, AttributeError) as exc:
        raise item.where("severity").error(str(exc), key="severity") from None
    action = None
    if v.get("action") is not None:
        try:
            action = Action(str(v["action"]))
        except ValueError:
            raise item.where("action").error(
                f"unknown action {v['action']!r} (one of: {', '.join(a.value for a in Action)})",
                key="action") from None
    maturity = v.get("maturity", "incubating")
    if maturity not in _MATURITY:
        raise item.where("maturity").error(f"maturity must be one of {', '.join(_MATURITY)}",
                                           key="maturity")
    tags = tuple(_str_list(item, "tags"))
    categories = tuple(_str_list(item, "categories"))
    enabled = v.get("enabled", True)
    if not isinstance(enabled, bool):
        raise item.where("enabled").error("enabled must be true or false", key="enabled")
    exc_nodes: list[Node] = []
    exc_texts = _str_list(item, "exceptions")
    seq = item.nodes.get("exceptions")
    for j, text in enumerate(exc_texts):
        sub = seq.value[j] if isinstance(seq, yaml.SequenceNode) else item.node
        exc_node = ns.parse(text, _Where(item.src.file, item.src.text, sub), "exceptions")
        bad = raw_text_violation(exc_node)
        if bad is not None:
            raise _Where(item.src.file, item.src.text, sub).error(
                _raw_text_message(bad), bad.offset, key="exceptions")
        exc_nodes.append(exc_node)
    kinds = node_kinds(node)
    if "kinds" in v:
        declared = frozenset(_str_list(item, "kinds"))
        bad = declared - ALL_KINDS
        if bad:
            raise item.where("kinds").error(f"unknown event kind(s): {', '.join(sorted(bad))}",
                                            key="kinds")
        kinds = declared
    output = v.get("output") or v["desc"].strip().splitlines()[0]
    if not isinstance(output, str):
        raise item.where("output").error("output must be a string", key="output")
    for m in re.finditer(r"%([A-Za-z_][A-Za-z0-9_.]*[A-Za-z0-9_])", output):
        if m.group(1) not in ns.fields:
            raise item.where("output").error(f"unknown field %{m.group(1)} in output",
                                             key="output")
    tests = v.get("tests", {})
    if not isinstance(tests, dict) or set(tests) - {"match", "no_match"}:
        raise item.where("tests").error("tests has keys match and no_match", key="tests")
    for key in ("match", "no_match"):
        cases = tests.get(key, [])
        if not isinstance(cases, list):
            raise item.where("tests").error(f"tests.{key} must be a list", key="tests")
        for case in cases:
            if isinstance(case, dict):
                unknown = [k for k in case if k not in ns.fields]
                if unknown:
                    raise item.where("tests").error(f"unknown field {unknown[0]!r} in test case",
                                                    key="tests")
            elif not isinstance(case, str):
                raise item.where("tests").error("a test case is a command string or a "
                                                "mapping of event fields", key="tests")
    predicate = _compile(node, item.where("condition"))
    exc_predicates = [_compile(e, item.where("exceptions")) for e in exc_nodes]
    del exc_predicates  # compiled only to surface errors with positions now
    rule = Rule(
        id=item.name, desc=v["desc"].strip(), condition=v["condition"], severity=severity,
        output=output, predicate=predicate, kinds=kinds, guard=guard(node),
        fields=tuple(node_fields(node)), tags=tags, categories=categories,
        mitre=tuple(t for t in tags if _MITRE.match(t)), maturity=maturity, action=action,
        enabled=enabled, exceptions=tuple(exc_texts), tests=tests, pack=item.pack,
        file=item.src.file, line=item.node.start_mark.line + 1,
    )
    rule.node = node
    rule.exception_nodes = tuple(exc_nodes)
    if exc_nodes:
        _set_exceptions(rule)
    return rule


def _compile(node: Node, where: _Where) -> Any:
    try:
        return compile_node(node)
    except ConditionSyntaxError as exc:
        src = exc.source if isinstance(exc.source, _Where) else where
        raise src.error(str(exc), exc.offset, key="condition") from None


def _set_exceptions(rule: Rule) -> None:
    # The guard stays that of the base condition: exceptions only ever remove matches.
    combined = And((rule.node, *(Not(e) for e in rule.exception_nodes)))
    rule.predicate = compile_node(combined)


def _apply_override(by_id: Mapping[str, Rule], ov: Any, i: int, ns: _Namespace,
                    policy_file: str | None) -> None:
    key = f"rules.overrides.{i}"
    rule = by_id.get(ov.rule)
    if rule is None:
        raise PolicyError(f"override names unknown rule id {ov.rule!r}", file=policy_file,
                          key=f"{key}.rule")
    if ov.enabled is not None:
        rule.enabled = ov.enabled
    if ov.severity is not None:
        rule.severity = Severity.parse(ov.severity)
    if ov.action is not None:
        try:
            rule.action = Action(ov.action)
        except ValueError:
            raise PolicyError(f"unknown action {ov.action!r}", file=policy_file,
                              key=f"{key}.action") from None
    if ov.exceptions:
        extra: list[Node] = []
        for j, text in enumerate(ov.exceptions):
            try:
                extra.append(parse_condition(text, is_field=ns.fields.__contains__,
                                             lists=ns.lists, macros=ns.macro))
            except ConditionSyntaxError as exc:
                raise PolicyError(f"{exc} (at character {exc.offset + 1})", file=policy_file,
                                  key=f"{key}.exceptions.{j}") from None
            bad = raw_text_violation(extra[-1])
            if bad is not None:
                raise PolicyError(_raw_text_message(bad), file=policy_file,
                                  key=f"{key}.exceptions.{j}")
        rule.exceptions = (*rule.exceptions, *ov.exceptions)
        rule.exception_nodes = (*rule.exception_nodes, *extra)
        _set_exceptions(rule)


def _policy_dir(policy: Any) -> Path:
    source = getattr(policy, "source", "")
    p = Path(source) if source and not source.startswith("<") else None
    return p.parent if p is not None else Path.cwd()


def load_ruleset(policy: Any, *, use_automaton: bool = True) -> RuleSet:
    """Load the packs and files ``policy.rules`` names, apply its overrides, compile.

    ``RuleSet.policy_hash`` covers the policy's hash *and* the text of every rule file
    loaded, so an edited pack changes the hash recorded with each verdict.
    """
    section = policy.rules
    sources = [builtin_pack_source(name) for name in section.packs]
    base = _policy_dir(policy)
    for fname in section.files:
        path = Path(fname)
        if not path.is_absolute():
            path = base / path
        try:
            text = path.read_text()
        except OSError as exc:
            raise PolicyError(f"cannot read rule file {str(path)!r}: {exc.strerror}",
                              file=getattr(policy, "source", None), key="rules.files") from exc
        sources.append(PackSource(path.stem, str(path), text))
    digest = hashlib.sha256(str(getattr(policy, "hash", "")).encode())
    for src in sources:
        digest.update(b"\0" + src.name.encode() + b"\0" + src.text.encode())
    policy_file = getattr(policy, "source", None)
    grader = grader_lists(policy)
    vocab = vocabulary_source()
    digest.update(b"\0vocabulary\0" + vocab.text.encode())
    for list_name, values in grader.items():
        for path in values:
            digest.update(b"\0" + list_name.encode() + b"\0" + path.encode())
    return compile_sources(sources, policy_hash="sha256:" + digest.hexdigest(),
                           overrides=section.overrides, policy_file=policy_file,
                           use_automaton=use_automaton, grader=grader)
