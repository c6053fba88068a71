"""Which compute is whose: the call's foreground work or background (sans-I/O)."""

from __future__ import annotations

from bastion.sensors.burn import ProcSample, background_pids, split_compute

LEADER = 100


def _p(pid: int, ppid: int, sid: int = LEADER, cpu: float = 0.0, name: str = "x") -> ProcSample:
    return ProcSample(pid, ppid, sid, start=1, cpu=cpu, name=name)


def test_children_of_the_running_call_are_foreground():
    procs = {p.pid: p for p in (_p(LEADER, 1), _p(101, LEADER), _p(102, 101))}
    assert background_pids(procs, LEADER) == set()


def test_setsid_and_orphans_are_background_while_the_call_runs():
    procs = {p.pid: p for p in (_p(LEADER, 1), _p(101, LEADER), _p(103, LEADER, sid=103),
                                _p(104, 1))}  # 104: daemonised, re-parented to init
    assert background_pids(procs, LEADER) == {103, 104}


def test_everything_left_after_the_call_returned_is_background():
    procs = {p.pid: p for p in (_p(101, 1), _p(102, 101))}
    assert background_pids(procs, None) == {101, 102}


def test_split_counts_the_cgroup_total_once_the_call_is_gone():
    before = {101: _p(101, 1, cpu=1.0)}
    now = {101: _p(101, 1, cpu=1.2)}
    # short-lived workers that exited between samples are only in the cgroup total
    c = split_compute(0.5, now, before, None, was_returned=True)
    assert c.returned and c.background == 0.5 and c.background_pids == (101,)
    # in the interval the call returns, its foreground's last moments are not background
    c = split_compute(0.5, now, before, None, was_returned=False)
    assert abs(c.background - 0.2) < 1e-9


def test_split_while_running_and_expected_processes():
    before = {LEADER: _p(LEADER, 1, cpu=1.0), 103: _p(103, LEADER, sid=103, cpu=0.0)}
    now = {LEADER: _p(LEADER, 1, cpu=1.5), 103: _p(103, LEADER, sid=103, cpu=0.25),
           105: _p(105, 1, cpu=0.1, name="ray-worker")}
    c = split_compute(0.85, now, before, LEADER)
    assert not c.returned and abs(c.background - 0.35) < 1e-9
    c = split_compute(0.85, now, before, LEADER, expected=("ray-*",))
    assert abs(c.background - 0.25) < 1e-9 and c.background_pids == (103,)


def test_a_connection_waits_on_an_outstanding_request_or_recent_data_only():
    from bastion.sensors.burn import connection_waits, served_pids

    assert connection_waits(8, 8, 3, 2000)  # request sent in the connect's tick
    assert connection_waits(9000, 9000 + 1, 300, 2000)  # still waiting, long after
    assert connection_waits(5000, 100, 300, 2000)  # a reply streams back
    assert not connection_waits(5000, 4000, 300, 2000)  # answered, idle since
    assert not connection_waits(9000, 9000, 1, 2000)  # connected, never asked

    fg = {10: frozenset({"socket:[1]", "pipe:[7]"})}
    bg = {20: frozenset({"socket:[2]"}), 21: frozenset(), 30: frozenset({"pipe:[7]"}),
          40: frozenset({"pipe:[9]"})}
    tcp = {"socket:[1]": ("A", "B"), "socket:[2]": ("B", "A")}
    parents = {20: 1, 21: 20, 30: 1, 40: 1}
    assert served_pids(fg, bg, tcp, parents) == {20, 21, 30}  # 21: the daemon's worker
    assert served_pids(fg, bg, tcp, parents, waiting=frozenset()) == {30}  # idle socket
    # the call's own stdio, kept by a detached process, proves nothing
    assert served_pids(fg, bg, tcp, parents, frozenset({"pipe:[7]"}),
                       frozenset({"socket:[1]"})) == {20, 21}


def test_a_busy_streak_goes_on_through_duty_cycles_and_ends_when_the_process_idles():
    from bastion.sensors.burn import Streak, advance_streak

    s = Streak()
    for _ in range(8):  # runnable 40% of each 0.25 s (a throttled miner on a busy host)
        s = advance_streak(s, 0.02, 0.08, 0.25, on=0.25)
    assert s.share > 0.3 and 0.08 <= s.cpu <= 0.16 and s.runnable > 0.4, s
    for _ in range(8):  # then it sleeps: the streak ends, its CPU no longer counts
        s = advance_streak(s, 0.0, 0.0, 0.25, on=0.25)
    assert s.cpu == 0.0 and s.runnable == 0.0
    # a whole life seen at once (the first read of a new burner)
    assert advance_streak(Streak(), 0.5, 0.4, 1.0, on=0.25).cpu == 0.5


def test_split_sums_the_live_streaks_of_unserved_background_processes():
    from bastion.sensors.burn import Streak

    procs = {p.pid: p for p in (_p(101, 1, cpu=1.0), _p(102, 1, cpu=1.0), _p(103, 1, cpu=1.0))}
    streaks = {101: Streak(0.9, 0.4, 0.9), 102: Streak(0.5, 0.2, 0.5), 103: Streak(1.0, 3.0, 3.0)}
    c = split_compute(0.0, procs, procs, None, served={103}, streaks=streaks, was_returned=True)
    assert abs(c.runnable_cpu - 0.6) < 1e-9 and abs(c.runnable - 1.4) < 1e-9
