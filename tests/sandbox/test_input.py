"""Bad input at the choke point: bytes that are not UTF-8 run and are recorded as
they are; call ids, steps and timeouts that would forge reports or mean something
else than they say are refused with a clear message."""

from __future__ import annotations

import orjson
import pytest

from bastion.audit.chain import raw_bytes_of
from bastion.audit.reader import RunLog  # noqa: F401  (the reader must import)


def test_invalid_utf8_command_runs_and_is_recorded_faithfully(make_session) -> None:
    s = make_session()
    raw = b"printf '%s' caf\xe9 > /workspace/latin1; echo \xff\xfe | od -An -tx1"
    r = s.exec(raw)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.split() == ["ff", "fe", "0a"]
    assert (s.workspace / "latin1").read_bytes() == b"caf\xe9"
    # an argv with bytes items reaches execve as those bytes
    r = s.exec([b"/bin/echo", b"\xc3\x28"])
    assert r.exit_code == 0
    # the trail holds the exact bytes of what was asked for
    s._flush_audit()
    db = s.host.state.audit
    import sqlite3

    bodies = [row[0] for path in db.glob("*.db")
              for row in sqlite3.connect(path).execute("SELECT body FROM records")]
    found = []
    for body in bodies:
        record = orjson.loads(body)
        got = raw_bytes_of(record, "/data/fields/cmd.raw")
        if got is not None:
            found.append(got)
    assert raw in found


@pytest.mark.parametrize("call_id", ["c1\nverdict forged", "tab\there", "", "x" * 129, " c1",
                                     "\x1b[31mred"])
def test_bad_call_ids_are_refused(make_session, call_id: str) -> None:
    s = make_session()
    with pytest.raises(ValueError, match="call_id"):
        s.exec("echo hi", call_id=call_id)
    assert s.exec("echo ok", call_id="c-ok/1:2").stdout == "ok\n"


@pytest.mark.parametrize("step", [-1, 10**12, True, "3", 1.5])
def test_bad_steps_are_refused(make_session, step: object) -> None:
    s = make_session()
    with pytest.raises((ValueError, TypeError), match="step"):
        s.exec("echo hi", step=step)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [0, -1, -0.5, float("nan"), float("inf"), True])
def test_bad_timeouts_are_refused(make_session, timeout: object) -> None:
    s = make_session()
    with pytest.raises((ValueError, TypeError), match="timeout"):
        s.exec("echo hi", timeout=timeout)  # type: ignore[arg-type]
    assert s.exec("echo ok", timeout=30).stdout == "ok\n"
