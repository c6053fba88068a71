"""What counts as whose compute: a call's foreground work versus background compute.

Shared by the resource sensor (which measures) and the engine's compute detector
(which judges); sans-I/O, so the classification is tested without processes.

A tool call's own foreground work, within its ``exec_timeout``, is legitimate: a test
suite, a build, a training loop may keep every core busy for a minute. What a miner
needs is compute the agent did not wait for. A process of a call is **background**
when

* its call has returned (the call's first process, which the supervisor made a
  session leader, is gone): everything still running in the call cgroup outlived it;
* or it left the call's session (``setsid``, ``nohup setsid``, a daemon): its session
  id is no longer the call leader's;
* or it was daemonised (double fork): it no longer descends from the call leader.

Background compute is split by the shape of its processes: **persistent** background
processes (alive across two samples: a miner, however throttled or split) and
short-lived ones (a background build's compiler runs, a queue worker's ``mv``). The
compute detector gives the first a small budget and the second a large one, so a miner
is contained within seconds while ``nohup make &`` of small units finishes its work.

Everything is measured as CPU *used* (cgroup ``cpu.stat`` ``usage_usec``; for single
processes ``utime + stime`` plus the time of children they reaped), never run-queue
demand: on a host shared by 64 sessions, waiting for a core is not burning one.

A background process is **served** while a running call talks to it (a foreground
process of the call and the background process hold the same pipe, or the two ends
of one TCP connection on which the call sent a request it still waits on, or data
moved within ``SERVED_GRACE``: an idle connection is no request): a build daemon (Gradle, Bazel, sccache), a language server or
a dev server doing work the call asked for and waits on. Its compute is that call's
foreground work, and stays so for ``SERVED_GRACE`` seconds after the call stops
talking to it (JIT, GC, writing caches). Nothing counts the call's own stdio pipes:
a detached process that kept them is not serving anyone.

What a background process is doing shows fastest in how long it is **runnable**
(running, or waiting for a core: ``/proc/PID/task/*/schedstat``): a busy loop is
runnable all the time, whatever share of a core a crowded host gives it, while a
daemon that idles, blocks on I/O or is stopped (SIGSTOP duty cycling) is not. Each
background process has a **busy streak** (``Streak``, ``advance_streak``): while its
own runnable share, smoothed over ``BUSY_SMOOTHING`` seconds, stays at or above the
policy's ``background_busy_share``, the CPU it runs adds up; when the share falls
under half of that the streak ends. ``CallCompute.runnable`` / ``runnable_cpu`` are
the sums over the *live*, unserved background processes of a call: a miner (however
split, niced or duty-cycled) keeps adding up, while a background build's compiler
runs each end their streak when they exit, so ``nohup make -j2`` never adds up to
more than the units running at that moment.

``res.burn_seconds`` (seconds a process has kept at least ``cpu_burn_cores`` busy
without a break) is still measured per process for rules such as
``mining.sustained_burn``; the threshold is capped at the session's CPU limit and the
10% tolerance absorbs /proc's 10 ms tick.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "BURN_TOLERANCE",
    "BUSY_SMOOTHING",
    "SERVED_GRACE",
    "CallCompute",
    "ProcSample",
    "Streak",
    "advance_streak",
    "background_pids",
    "burn_threshold",
    "connection_waits",
    "is_burning",
    "matches_expected",
    "served_pids",
    "split_compute",
]

BURN_TOLERANCE = 0.9
SERVED_GRACE = 2.0  # seconds a daemon's compute still counts as served after its call
BUSY_SMOOTHING = 1.0  # seconds over which a process's runnable share is smoothed


def burn_threshold(cpu_burn_cores: float, cap_cores: float | None) -> float:
    return min(cpu_burn_cores, cap_cores) if cap_cores else cpu_burn_cores


def is_burning(cores: float, threshold: float) -> bool:
    """CPU *used* at or above the threshold (never demand)."""
    return cores >= threshold * BURN_TOLERANCE


@dataclass(frozen=True, slots=True)
class ProcSample:
    """One process of a call at one sample (host pids)."""

    pid: int
    ppid: int
    sid: int
    start: int  # start time in ticks: tells a recycled pid apart
    cpu: float  # seconds it used itself: utime + stime
    name: str = ""
    children: float = 0.0  # seconds used by children it reaped (short-lived workers)
    run: float | None = None  # schedstat: seconds run, all threads (None: not read)
    wait: float = 0.0  # schedstat: seconds waited on a run queue, all threads
    age: float = 0.0  # seconds since it started


@dataclass(frozen=True, slots=True)
class Streak:
    """One background process's unbroken busy streak (see the module doc)."""

    share: float = 0.0  # runnable share, smoothed over BUSY_SMOOTHING seconds
    cpu: float = 0.0  # seconds it ran during the streak
    runnable: float = 0.0  # seconds it was runnable during the streak


def advance_streak(prev: Streak, ran: float, waited: float, dt: float, on: float) -> Streak:
    """``prev`` after ``dt`` seconds in which the process ran ``ran`` and waited for
    a core ``waited`` seconds; ``on`` is the share that keeps a streak going."""
    if dt <= 0:
        return prev
    now = (max(0.0, ran) + max(0.0, waited)) / dt
    share = prev.share + min(1.0, dt / BUSY_SMOOTHING) * (now - prev.share)
    if share >= on:
        return Streak(share, prev.cpu + max(0.0, ran), prev.runnable + max(0.0, ran + waited))
    if share < on / 2:
        return Streak(share)
    return Streak(share, prev.cpu, prev.runnable)


def background_pids(procs: Mapping[int, ProcSample], leader: int | None) -> set[int]:
    """The processes of one call that are not its foreground work.

    ``leader`` is the call's first process (a session leader: the supervisor calls
    ``setsid`` for every call) or None once it has exited: then every process left
    outlived the call."""
    if leader is None or leader not in procs:
        return set(procs)
    out: set[int] = set()
    for pid, proc in procs.items():
        if pid == leader:
            continue
        if proc.sid != leader:
            out.add(pid)  # setsid: left the call's session
            continue
        # descends from the leader? (an orphan is re-parented outside the call)
        seen = 0
        cur = proc.ppid
        while cur != leader and cur in procs and seen < 64:
            cur = procs[cur].ppid
            seen += 1
        if cur != leader:
            out.add(pid)
    return out


@dataclass(frozen=True, slots=True)
class CallCompute:
    """CPU one call used over one sample interval, in core-seconds."""

    used: float  # everything the call cgroup used (exited processes included)
    background: float  # the part used by background processes (see module doc)
    background_pids: tuple[int, ...] = ()
    persistent: float = 0.0  # of ``background``, used by processes alive at both samples
    returned: bool = False  # the call's first process is gone
    runnable: float = 0.0  # seconds the live, unserved background processes' busy
    runnable_cpu: float = 0.0  # streaks were runnable / ran, summed (see module doc)
    served: float = 0.0  # compute of background processes a running call talks to


def split_compute(
    used: float,
    procs: Mapping[int, ProcSample],
    previous: Mapping[int, ProcSample],
    leader: int | None,
    expected: Iterable[str] = (),
    *,
    was_returned: bool = False,
    served: Iterable[int] = (),
    streaks: Mapping[int, Streak] | None = None,
) -> CallCompute:
    """Split a call's CPU ``used`` in one interval into foreground and background.

    Once the call has returned (and already had at the previous sample), all of
    ``used`` is background: the cgroup counter includes short-lived workers that
    per-process sampling would miss. Otherwise background is the per-process use of
    the background processes (a process not seen before counts with its whole life
    so far): in the interval in which the call returns, the cgroup counter also holds
    the foreground's last moments, which are not background. Processes named in the
    policy's ``expected_processes`` are never background, nor are ``served``
    processes (a running call talks to them: see ``served_pids``)."""
    patterns = tuple(expected)
    bg = background_pids(procs, leader)
    returned = leader is None or leader not in procs
    served_set = set(served)
    exempt = 0.0
    served_total = 0.0
    total = 0.0
    persistent = 0.0
    runnable = 0.0
    runnable_cpu = 0.0
    for pid in bg:
        proc = procs[pid]
        before = previous.get(pid)
        seen = before is not None and before.start == proc.start
        own = max(0.0, proc.cpu - before.cpu if seen else proc.cpu)  # type: ignore[union-attr]
        reaped = max(0.0, proc.children - before.children if seen  # type: ignore[union-attr]
                     else proc.children)
        if pid in served_set:
            exempt += own + reaped
            served_total += own + reaped
        elif patterns and matches_expected(proc.name, patterns):
            exempt += own + reaped
        else:
            total += own + reaped
            if seen:
                persistent += own  # what its reaped children used was short-lived work
            streak = (streaks or {}).get(pid)
            if streak is not None:
                runnable_cpu += streak.cpu
                runnable += streak.runnable
    if returned and was_returned:
        background = max(0.0, used - exempt)
    else:
        background = min(total, used + 0.02) if used > 0 else total
    listed = tuple(sorted(p for p in bg if p not in served_set and not (
        patterns and matches_expected(procs[p].name, patterns))))
    background = max(0.0, background)
    return CallCompute(used=max(0.0, used), background=background,
                       background_pids=listed, returned=returned,
                       persistent=min(persistent, background), runnable=runnable,
                       runnable_cpu=runnable_cpu, served=served_total)


def served_pids(
    foreground: Mapping[int, frozenset[str]],
    background: Mapping[int, frozenset[str]],
    tcp: Mapping[str, tuple[str, str]],
    parents: Mapping[int, int],
    ignore: frozenset[str] = frozenset(),
    waiting: frozenset[str] | None = None,
) -> set[int]:
    """The background processes a running call talks to, and their descendants.

    ``foreground`` / ``background``: the pipes and sockets (``read_endpoints``) each
    process holds; ``tcp``: ``socket:[inode]`` -> (local, remote) of established TCP
    connections in the session's network namespace; ``parents``: pid -> ppid of the
    background processes (the workers a daemon forks do its work too); ``ignore``:
    endpoints that prove nothing (the call's own stdio pipes, which a detached
    process may have kept); ``waiting``: the foreground's TCP sockets that carry a
    request (``connection_waits``), None to count every one. An established but idle
    connection is no request."""
    fg_ends: set[str] = set()
    for ends in foreground.values():
        fg_ends |= ends
    fg_ends -= ignore
    fg_peers = {(tcp[e][1], tcp[e][0]) for e in fg_ends
                if e in tcp and (waiting is None or e in waiting)}
    direct = {pid for pid, ends in background.items()
              if (ends - ignore) & fg_ends or any(tcp.get(e) in fg_peers for e in ends)}
    out = set(direct)
    for pid in background:
        cur, hops = parents.get(pid), 0
        while cur is not None and hops < 64 and pid not in out:
            if cur in direct:
                out.add(pid)
            cur, hops = parents.get(cur), hops + 1
    return out


def connection_waits(sent_ms: int, recv_ms: int, sent_bytes: int, grace_ms: int) -> bool:
    """Does a client's TCP connection carry a request the client waits on? It sent
    data, and no later than it last received any (a request is outstanding: the
    kernel's times are in ticks, so a request sent right after connecting can share
    the connect's tick), or data moved within ``grace_ms`` after it sent any (a
    daemon streaming its build output back). A connection on which the client never
    sent anything asks for nothing (``tcpi_bytes_acked`` counts the SYN of the end
    that connected: 1 is nothing)."""
    if sent_bytes <= 1:
        return False
    return sent_ms <= recv_ms or min(sent_ms, recv_ms) <= grace_ms


def matches_expected(name: str, patterns: tuple[str, ...]) -> bool:
    base = name.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(n, p) for p in patterns for n in (name, base) if n)
