"""Load a policy YAML file and turn every mistake into an error with file, line and key.

PyYAML's composer keeps a mark (line, column) on every node. We compose the node tree,
construct plain data from it, validate with pydantic, and map each pydantic error
location (a key path) back to the node it came from.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import PolicyError
from .model import PolicyModel

__all__ = ["load_policy_text", "policy_hash", "read_policy_file"]


# libyaml's composer when PyYAML has it (22x faster on the rule packs, which every
# `bastion check` and session start parses); its nodes carry the same line marks.
_COMPOSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def policy_hash(model: PolicyModel) -> str:
    """Content hash of the *meaning* of a policy (key order and comments don't count)."""
    canonical = json.dumps(model.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def load_policy_text(text: str, *, file: str = "<policy>") -> PolicyModel:
    try:
        root = yaml.compose(text, Loader=_COMPOSER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise PolicyError(
            f"not valid YAML: {exc.problem}",
            file=file,
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
        ) from exc
    if root is None:
        data: Any = {}
    else:
        _reject_duplicate_keys(root, file)
        data = _construct(root)
    if not isinstance(data, dict):
        raise PolicyError("a policy must be a mapping of sections", file=file, line=1)
    try:
        return PolicyModel.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc: Sequence[str | int] = [p for p in err["loc"] if not _is_pydantic_tag(p)]
        node = _find_node(root, loc)
        line = node.start_mark.line + 1 if node is not None else None
        key = ".".join(str(p) for p in loc) or None
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
            parent = _find_node(root, loc[:-1]) if loc else None
            allowed = _allowed_keys(loc[:-1])
            if allowed:
                message += f" (allowed: {', '.join(allowed)})"
            if parent is not None and line is None:
                line = parent.start_mark.line + 1
        raise PolicyError(message, file=file, line=line, key=key) from exc


def _construct(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    return loader.construct_object(node, deep=True)


def _is_pydantic_tag(part: object) -> bool:
    # pydantic inserts validator names such as 'function-after[...]' into locations
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def _find_node(root: yaml.Node | None, loc: Sequence[str | int]) -> yaml.Node | None:
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == str(part):
                    node = value_node
                    break
            else:
                return node
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return node
            node = node.value[part]
        else:
            return node
    return node


def _reject_duplicate_keys(node: yaml.Node, file: str, path: str = "") -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            full = f"{path}.{key}" if path else key
            if key in seen:
                raise PolicyError(
                    "duplicate key", file=file, line=key_node.start_mark.line + 1, key=full
                )
            seen.add(key)
            _reject_duplicate_keys(value_node, file, full)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _reject_duplicate_keys(item, file, f"{path}.{i}")


def _allowed_keys(loc: Sequence[str | int]) -> list[str]:
    model: Any = PolicyModel
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = _inner_model(field.annotation)
        if model is None:
            return []
    return sorted(getattr(model, "model_fields", {}))


def _inner_model(annotation: Any) -> Any:
    from typing import get_args

    if hasattr(annotation, "model_fields"):
        return annotation
    for arg in get_args(annotation):
        inner = _inner_model(arg)
        if inner is not None:
            return inner
    return None


def read_policy_file(path: str | Path) -> tuple[str, PolicyModel]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise PolicyError(f"cannot read policy file: {exc.strerror}", file=str(p)) from exc
    return text, load_policy_text(text, file=str(p))
