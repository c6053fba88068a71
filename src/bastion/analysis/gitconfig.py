"""git's configuration file syntax, read once for every judgment that needs it (what a
config makes git run later, what it makes git send)."""

from __future__ import annotations

import re

__all__ = ["git_config_entries"]


def git_config_entries(text: str) -> list[tuple[str, str]]:
    """(key, value) pairs of a git config file (sections, subsections, quotes)."""
    out: list[tuple[str, str]] = []
    section = ""
    lines = text.replace("\\\n", "").splitlines()[:8192]
    for raw in lines:
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        m = re.match(r'^\[\s*([\w.-]+)(?:\s+"((?:[^"\\]|\\.)*)")?\s*\](.*)$', line)
        if m:
            section = m.group(1).lower() + (f".{m.group(2)}" if m.group(2) is not None else "")
            line = m.group(3).strip()
            if not line:
                continue
        name, eq, value = line.partition("=")
        value = value.strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        else:
            value = re.split(r"\s[#;]", value, 1)[0].strip()
        out.append((f"{section}.{name.strip()}", value if eq else "true"))
    return out
