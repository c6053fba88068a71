"""A harness's own program inside the sandbox (Inspect's tool binary under /var/tmp) is
trusted by exact path and content, never by directory: running it draws no
``exec_from_tmp``; the same bytes elsewhere, or that path once the agent changed it,
still do. Real sessions, real exec events."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from bastion.session import Session
from tests.conftest import wait_for

pytestmark = pytest.mark.needs_root

RULE = "download_exec.exec_from_tmp"
TOOL = "/var/tmp/.harness/tool"


def _exec_event(session: Session, exe: str, call_id: str) -> object:
    return next((e for e in session.events if e.kind.value == "exec"
                 and e.call_id == call_id and e.fields.get("proc.exe") == exe), None)


def _flagged(session: Session, call_id: str) -> bool:
    return any(v.rule_id == RULE and v.call_id == call_id for v in session.verdicts)


def test_the_declared_program_is_trusted_until_the_agent_changes_it(
        session: Session) -> None:
    # an ELF program, not a script; each run lasts a second so that its exec is seen
    # with its image even on a loaded machine (a process gone before /proc is read
    # shows no executable to judge)
    program = Path("/bin/sleep").read_bytes()
    assert session.write_file(TOOL, program, call_id="w1").ok
    assert session.exec(f"chmod +x {TOOL}", call_id="w2").ok
    session.trust_executable(TOOL, hashlib.sha256(program).hexdigest())

    r = session.exec(f"{TOOL} 1 && echo harness-ran", call_id="trusted")
    assert r.stdout == "harness-ran\n", r.stderr
    event = wait_for(lambda: _exec_event(session, TOOL, "trusted"), timeout=60)
    assert event and event.fields.get("proc.trusted") is True  # type: ignore[union-attr]
    assert not _flagged(session, "trusted")
    # the declaration is in the trail
    assert any(e.kind.value == "lifecycle" and e.fields.get("life.state") == "trusted_file"
               and e.fields.get("file.path") == TOOL for e in session.events)

    # the same bytes under another name are the agent's program, not the harness's
    r = session.exec(f"cp {TOOL} /var/tmp/.harness/copy && /var/tmp/.harness/copy 1",
                     call_id="copy")
    assert r.exit_code == 0, r.stderr
    assert wait_for(lambda: _flagged(session, "copy"), timeout=60)

    # the agent changes one byte of the trusted file (it still runs): it loses the trust
    r = session.exec(f"printf x >> {TOOL} && {TOOL} 1", call_id="changed")
    assert r.exit_code == 0, r.stderr
    assert wait_for(lambda: _flagged(session, "changed"), timeout=60)
    event = _exec_event(session, TOOL, "changed")
    assert event is None or not event.fields.get("proc.trusted")  # type: ignore[union-attr]


def test_a_trusted_file_is_one_absolute_path_with_a_digest(session: Session) -> None:
    with pytest.raises(ValueError, match="absolute"):
        session.trust_executable("tool", "0" * 64)
    with pytest.raises(ValueError, match="sha256"):
        session.trust_executable(TOOL, "not-a-digest")


def _tools_archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, mode in (("inspect-sandbox-tools", b"\x7fELF-tool", 0o755),
                                 ("_internal/libz.so.1", b"\x7fELF-lib", 0o755),
                                 ("README", b"text", 0o644)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue())


def test_inspect_unpacking_its_tools_declares_only_its_programs() -> None:
    pytest.importorskip("inspect_ai")
    from inspect_ai.util._sandbox._cli import SANDBOX_TOOLS_DIR

    from bastion.frameworks.inspect import _harness_executables

    archive = _tools_archive()
    parent, leaf = SANDBOX_TOOLS_DIR.rsplit("/", 1)
    unpack = ["/bin/sh", "-c", "...", "sh", "", "0", "1", "700", parent, leaf,
              "sh", "-c", "tar xzf - || { cat >/dev/null; exit 1; }"]
    assert _harness_executables(unpack, archive) == [
        (f"{SANDBOX_TOOLS_DIR}/inspect-sandbox-tools", hashlib.sha256(b"\x7fELF-tool").hexdigest())]
    # the same archive unpacked anywhere else, or no archive at all: nothing is trusted
    elsewhere = [*unpack[:8], "/var/tmp", "agent-dir", *unpack[10:]]
    assert _harness_executables(elsewhere, archive) == []
    assert _harness_executables(unpack, b"not an archive") == []
    assert _harness_executables(unpack, "text input") == []
