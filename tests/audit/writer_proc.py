"""A writer process for the crash test: appends forever from several threads, in both
ways (durable single appends and group-committed batches), and prints each record's
position and id to stdout *after* it is acknowledged. The test SIGKILLs it."""

from __future__ import annotations

import sys
import threading

from bastion import Event, EventKind
from bastion.audit import AuditTrail, TrailConfig

_out = threading.Lock()


def _ack(seq: int, event_id: str) -> None:
    with _out:
        sys.stdout.write(f"{seq} {event_id}\n")
        sys.stdout.flush()


def _event(run: str, n: int) -> Event:
    return Event(EventKind.EXEC, run_id=run, episode_id=f"ep-{n % 3}", step=n, call_id=f"c{n}",
                 pid=1000 + n, ppid=1, fields={"proc.name": "worker", "n": n})


def single(trail: AuditTrail, run: str, offset: int) -> None:
    n = offset
    while True:
        event = _event(run, n)
        _ack(trail.append_event(event), event.id)
        n += 4


def batches(trail: AuditTrail, run: str, offset: int) -> None:
    n = offset
    while True:
        events = [_event(run, n + i) for i in range(25)]
        first = trail.submit_events(events).wait()
        for i, event in enumerate(events):
            _ack(first + i, event.id)
        n += 1000


def main() -> None:
    state, run = sys.argv[1], sys.argv[2]
    trail = AuditTrail(state, run, config=TrailConfig(checkpoint_every=64,
                                                      checkpoint_interval=0.02))
    threads = [threading.Thread(target=single, args=(trail, run, i), daemon=True)
               for i in range(2)]
    threads += [threading.Thread(target=batches, args=(trail, run, 10_000_000 * (i + 1)),
                                 daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    with _out:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
    threading.Event().wait()


if __name__ == "__main__":
    main()
