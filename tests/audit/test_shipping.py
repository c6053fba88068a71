"""The cluster's ``ShippingRecorder`` passes the same ``EventRecorder`` conformance
suite as the local trail: order, flush makes records durable (on the node's disk),
and a spool that cannot be written raises instead of dropping records."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.cluster.shipping import ShippingRecorder, deliver, recover
from bastion.testing import MemoryRecorder, RecorderProbe, check_recorder


@pytest.fixture
def small_fs() -> Iterator[Path]:
    mnt = Path(tempfile.mkdtemp(prefix="bastion-spool-", dir="/var/tmp"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mnt)],
                   check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        shutil.rmtree(mnt, ignore_errors=True)


def _ids(records) -> list[str]:
    return [data.get("id", "") for _kind, data in records]


def test_shipping_recorder_conforms(small_fs: Path) -> None:
    def make() -> RecorderProbe:
        recorder = ShippingRecorder("node-a", spool_dir=small_fs / "spool")

        def break_it() -> None:
            fd = os.open(small_fs / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                for size in (65536, 1):  # big pieces, then the last partial page
                    while True:
                        try:
                            os.write(fd, b"\0" * size)
                        except OSError as exc:
                            assert exc.errno == errno.ENOSPC
                            break
            finally:
                os.close(fd)
            # tmpfs gives a write room in the file's last page: use that up too
            fd = os.open(recorder.spool, os.O_WRONLY | os.O_APPEND)
            try:
                while True:
                    os.write(fd, b"\n")
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
            finally:
                os.close(fd)

        return RecorderProbe(recorder,
                             read=lambda: _ids(recover(recorder.spool)),
                             durable_ids=lambda: _ids(recover(recorder.spool)),
                             break_it=break_it, close=recorder.close)

    check_recorder(make)


def test_a_dead_node_process_leaves_its_records_for_the_driver(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    code = (
        "import os, sys\n"
        "from bastion.cluster.shipping import ShippingRecorder\n"
        "from bastion.events import Event, EventKind\n"
        f"r = ShippingRecorder('node-b', spool_dir={str(spool)!r})\n"
        "for i in range(5):\n"
        "    r.append_event(Event(kind=EventKind.LIFECYCLE, session_id='s', run_id='r',\n"
        "                         episode_id='e', fields={'life.state': f'n{i}'}))\n"
        "r.flush()\n"
        "print(r.spool, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    path = Path(out.stdout.strip())
    records = recover(path)
    assert [d["fields"]["life.state"] for _k, d in records] == [f"n{i}" for i in range(5)]
    sink = MemoryRecorder()
    assert deliver(records, sink) == 5


def test_acknowledge_empties_the_spool(tmp_path: Path) -> None:
    from bastion.events import Event, EventKind

    r = ShippingRecorder("node-c", spool_dir=tmp_path)
    for i in range(3):
        r.append_event(Event(kind=EventKind.LIFECYCLE, session_id="s", run_id="r",
                             episode_id="e", fields={"life.state": f"n{i}"}))
    r.flush()
    drained = r.drain()
    r.append_event(Event(kind=EventKind.LIFECYCLE, session_id="s", run_id="r",
                         episode_id="e", fields={"life.state": "later"}))
    r.acknowledge()
    assert len(drained) == 3
    assert [d["fields"]["life.state"] for _k, d in recover(r.spool)] == ["later"]
    r.drain()
    r.close()
    assert not os.path.exists(r.spool)
