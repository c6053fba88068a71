"""Every ``EventRecorder`` passes the same conformance suite (``bastion.testing``):
order, flush, durability after flush and checkpoint, and failures that raise.

A new recorder (the cluster's shipping recorder, a test fake) adds a probe here.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bastion.audit import AuditTrail, TrailConfig
from bastion.audit.reader import RunLog
from bastion.testing import MemoryRecorder, RecorderProbe, check_recorder


def _ids(records: list[tuple[str, object]]) -> list[str]:
    return [getattr(value, "id", "") for _kind, value in records]


def memory_probe() -> RecorderProbe:
    recorder = MemoryRecorder()

    def break_it() -> None:
        recorder.fail = OSError(errno.ENOSPC, "no space left on device")

    return RecorderProbe(recorder, read=lambda: _ids(recorder.records),
                         durable_ids=lambda: _ids(recorder.records[:recorder.durable]),
                         break_it=break_it)


@pytest.fixture
def small_fs() -> Iterator[Path]:
    """A 4 MiB tmpfs: the trail's disk, filled up to break it."""
    mnt = Path(tempfile.mkdtemp(prefix="bastion-rec-", dir="/var/tmp"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0711", "tmpfs", str(mnt)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        shutil.rmtree(mnt, ignore_errors=True)
        pytest.fail(f"cannot mount a tmpfs: {done.stderr}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        shutil.rmtree(mnt, ignore_errors=True)


def trail_probe(root: Path) -> Callable[[], RecorderProbe]:
    def make() -> RecorderProbe:
        trail = AuditTrail(root / "state", "conformance",
                           config=TrailConfig(durable_appends=False))
        db = trail.path

        def committed() -> list[str]:
            # what another process can read is what survived: committed to SQLite
            with RunLog(db) as log:
                return [r.data.get("id", "") for r in log.records()]

        def break_it() -> None:
            with open(root / "filler", "wb") as out:
                try:
                    while True:
                        out.write(b"\0" * 65536)
                        out.flush()
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC

        def close() -> None:
            (root / "filler").unlink(missing_ok=True)
            trail.close()

        return RecorderProbe(trail, read=committed, durable_ids=committed,
                             break_it=break_it, close=close)

    return make


def test_memory_recorder_conforms() -> None:
    check_recorder(memory_probe)


@pytest.mark.needs_root
def test_audit_trail_conforms(small_fs: Path) -> None:
    check_recorder(trail_probe(small_fs))


def test_the_suite_catches_a_recorder_that_drops_silently() -> None:
    class Dropping(MemoryRecorder):
        def append_event(self, event):  # type: ignore[no-untyped-def]
            if self.fail is not None:
                return None  # the defect: a lost record, and no error
            return super().append_event(event)

        def flush(self, *, checkpoint: bool = False) -> None:
            if self.fail is None:
                super().flush(checkpoint=checkpoint)

    def probe() -> RecorderProbe:
        base = memory_probe()
        recorder = Dropping()
        return RecorderProbe(recorder, read=lambda: _ids(recorder.records),
                             durable_ids=lambda: _ids(recorder.records[:recorder.durable]),
                             break_it=lambda: setattr(recorder, "fail", OSError("full")),
                             close=base.close)

    with pytest.raises(AssertionError, match="must raise"):
        check_recorder(probe)
