"""From inside a real session: the audit database, the signing key and the checkpoint
sink can be neither read nor written. The state directory lives under /var/lib, which
sandboxes otherwise see read-only, and a control file beside it proves the probe
would have seen an unmasked path."""

from __future__ import annotations

import hashlib
import os
import shlex
from pathlib import Path

from bastion import Policy, Session
from bastion.audit import open_trail, verify_state_dir


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_session_cannot_touch_audit_key_or_sink(visible_root: Path) -> None:
    state = visible_root / "state"
    control = visible_root / "control"
    control.mkdir(mode=0o755)
    (control / "visible.txt").write_text("the sandbox can see /var/lib\n")
    os.chmod(control / "visible.txt", 0o644)

    # no rule packs: the claim under test is the sandbox's mask, not a rule refusing
    # commands that mention bastion's state (which it also does)
    policy = Policy.from_dict({"rules": {"packs": []}})
    trail = open_trail(state, "iso-run")
    trail.append_policy(policy)
    db = state / "audit" / "iso-run.db"
    key = state / "keys" / "iso-run.ed25519"
    sink = state / "checkpoints" / "iso-run"
    note = min(sink.glob("*.cp"))
    protected = [db, key, sink / "run.json", note]
    before = {p: _digest(p) for p in protected}

    with Session(policy, run_id="iso-run", episode_id="iso-ep", state_dir=state,
                 recorder=trail) as session:
        # /var/lib is not in the session's view at all (an allow list of host trees);
        # the probe below still runs, and also shows the state dir is not merely masked
        seen = session.exec(f"cat {shlex.quote(str(control / 'visible.txt'))}", step=0)
        assert not seen.ok and "No such file" in seen.stderr
        assert session.exec("cat /etc/hostname /usr/bin/env >/dev/null", step=100).ok
        probes = {
            "read db": f"cat {shlex.quote(str(db))}",
            "read wal": f"cat {shlex.quote(str(db))}-wal",
            "list audit": f"ls {shlex.quote(str(state / 'audit'))}",
            "read key": f"cat {shlex.quote(str(key))}",
            "list keys": f"ls {shlex.quote(str(state / 'keys'))}",
            "read sink": f"cat {shlex.quote(str(sink / 'run.json'))}",
            "list sink": f"ls {shlex.quote(str(sink))}",
            "write db": f"echo junk >> {shlex.quote(str(db))}",
            "write key": f"echo junk > {shlex.quote(str(key))}",
            "write sink": f"echo junk > {shlex.quote(str(note))}",
            "new note": f"echo junk > {shlex.quote(str(sink / 'forged.cp'))}",
            "sqlite": "python3 -c " + shlex.quote(
                f"import sqlite3; print(sqlite3.connect({str(db)!r}).execute("
                "'select count(*) from records').fetchone())"),
        }
        for step, (name, command) in enumerate(probes.items(), start=1):
            result = session.exec(command, step=step)
            assert result.exit_code != 0, f"{name} succeeded inside the sandbox: {result.stdout}"
            assert "junk" not in result.stdout
    trail.close()
    assert {p: _digest(p) for p in protected if p != db} == {
        p: d for p, d in before.items() if p != db}
    assert not (sink / "forged.cp").exists()
    result = verify_state_dir(state)[0]
    assert result.ok, result.problem
    assert result.records >= 2 + 3 * (len(probes) + 2)  # policy, lifecycle, every call
