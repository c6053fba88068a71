"""What telling infra failures from tampering costs per tool call.

After every answered call the session decides whether any process of the agent's is
left (``Session._note_quiet``: the call cgroups not yet seen empty, then a synchronous
look at the supervisor incl. its limits, priority and affinity). Measured after 1, 50
and 200 calls of one session, beside ``Session.live_calls()`` (which reads every call
cgroup, the naive way) and beside a plain ``exec("true")`` in the same session, so the
figure reads as a share of a call.
"""

from __future__ import annotations

import shutil
import time

from _common import bench_state_dir, emit, summary_ms

from bastion import Policy, Session

REPEAT = 50


def _time(fn, n: int = REPEAT) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    state = bench_state_dir()
    results: dict[str, dict] = {}
    try:
        with Session(Policy.default(), state_dir=state) as s:
            calls = 0
            for mark in (1, 50, 200):
                while calls < mark:
                    s.exec("true")
                    calls += 1
                quiet = _time(s._note_quiet)
                naive = _time(s.live_calls)
                call = _time(lambda: s.exec("true"), 10)
                calls += 10
                results[f"after_{mark}_calls"] = {
                    "note_quiet": summary_ms(quiet), "live_calls_naive": summary_ms(naive),
                    "exec_true": summary_ms(call),
                    "quiet_share_of_call_p50": round(
                        summary_ms(quiet)["p50_ms"] / summary_ms(call)["p50_ms"], 4),
                }
    finally:
        shutil.rmtree(state, ignore_errors=True)
    emit("infra_check", results)


if __name__ == "__main__":
    main()
