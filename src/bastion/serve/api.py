"""The versioned REST API (``/api/v1``): runs, episodes, sessions, calls, events,
verdicts, actions, audit status, policies, per-step statistics, the live stream and
operator actions. Lists are newest first, filtered by query parameters, and cut to
``limit`` after ``offset``; a run-scoped token sees only its run.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse

from ..audit.errors import AuditError
from ..audit.reader import Record
from .actions import NoHandle, record_operator_action
from .auditstatus import checkpoint_info
from .auth import Principal
from .breaker import RunSummary, run_summaries
from .context import (
    AllRuns,
    Context,
    Ctx,
    HeaderPrincipal,
    Reader,
)
from .index import CallInfo, Index, SessionInfo, severity_rank
from .models import (
    ActionOut,
    ActionRequest,
    ActionResult,
    AuditOut,
    BreakerOut,
    CallOut,
    EpisodeDetail,
    EpisodeOut,
    EventOut,
    PolicyDetail,
    PolicyOut,
    RunOut,
    SessionOut,
    SessionState,
    SeverityName,
    StepStats,
    VerdictOut,
    VerifyOut,
)
from .stream import DROPPED

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")

Limit = Query(100, ge=1, le=1000, description="at most this many items")
Offset = Query(0, ge=0, le=10_000_000, description="skip this many items first")
RunQ = Query(None, max_length=200, description="only this run")
EpisodeQ = Query(None, max_length=200, description="only this episode")
StepQ = Query(None, ge=-1, le=10_000_000, description="only this agent step")
SeverityQ = Query(None, description="at least this severity")
CategoryQ = Query(None, max_length=100, description="only verdicts in this category")


def _sev_name(rank: int) -> SeverityName | None:
    names: tuple[SeverityName, ...] = ("info", "low", "medium", "high", "critical")
    return names[rank] if 0 <= rank < len(names) else None


def _page(items: list[Any], offset: int, limit: int) -> list[Any]:
    return items[offset:offset + limit]


# -- converters ------------------------------------------------------------------------


def session_out(index: Index, s: SessionInfo) -> SessionOut:
    return SessionOut(session_id=s.session_id, run_id=s.run_id, episode_id=s.episode_id,
                      state=index.session_state(s), reason=s.reason, policy=s.policy,  # type: ignore[arg-type]
                      policy_hash=s.policy_hash, network_phase=s.network_phase,
                      created=s.created, last_wall=s.last_wall, calls=s.calls,
                      verdicts=s.verdicts, worst=_sev_name(s.worst))


def call_out(c: CallInfo) -> CallOut:
    return CallOut(run_id=c.run_id, episode_id=c.episode_id, session_id=c.session_id,
                   call_id=c.call_id, step=c.step, command=c.command, start=c.start,
                   end=c.end, outcome=c.outcome, exit_code=c.exit_code, verdicts=c.verdicts,
                   worst=_sev_name(c.worst))


def verdict_out(r: Record) -> VerdictOut:
    d = r.data
    return VerdictOut(
        run_id=r.run_id, seq=r.seq, id=str(d.get("id", "")), rule_id=str(d.get("rule_id", "")),
        severity=str(d.get("severity", "")), message=str(d.get("message", "")),
        action=str(d.get("action", "none")), categories=[str(c) for c in d.get("categories")
                                                         or []],
        mitre=[str(m) for m in d.get("mitre") or []], session_id=str(d.get("session_id", "")),
        episode_id=str(d.get("episode_id", "")), step=_int(d.get("step")),
        call_id=_str(d.get("call_id")), pid=_int(d.get("pid")),
        policy_hash=str(d.get("policy_hash", "")), wall=r.wall,
        evidence=dict(d.get("evidence") or {}))


def action_out(r: Record) -> ActionOut:
    d = r.data
    f = d.get("fields") or {}
    ok = f.get("action.ok")
    return ActionOut(
        run_id=r.run_id, seq=r.seq, session_id=str(d.get("session_id", "")),
        episode_id=str(d.get("episode_id", "")), step=_int(d.get("step")),
        call_id=_str(d.get("call_id")), wall=r.wall, name=str(f.get("action.name", "")),
        target=str(f.get("action.target", "")), rule=str(f.get("action.rule", "")),
        ok=ok if isinstance(ok, bool) else None, detail=str(f.get("action.detail", "")),
        operator=f.get("action.rule") == "operator")


def event_out(r: Record) -> EventOut:
    d = r.data
    return EventOut(run_id=r.run_id, seq=r.seq, type=r.type, kind=str(d.get("kind", "")),
                    session_id=str(d.get("session_id", "")),
                    episode_id=str(d.get("episode_id", "")), step=_int(d.get("step")),
                    call_id=_str(d.get("call_id")), pid=_int(d.get("pid")),
                    ppid=_int(d.get("ppid")), wall=r.wall, fields=dict(d.get("fields") or {}))


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


def breaker_out(s: RunSummary) -> BreakerOut:
    return BreakerOut(run_id=s.run_id, tripped=s.paused is not None, reason=s.paused,
                      breaker_rate=s.breaker_rate, breaker_min_episodes=s.breaker_min_episodes,
                      episodes=s.episodes, violating_episodes=s.violating_episodes,
                      training_steps=s.training_steps, notices=s.notices)


# -- derived views ------------------------------------------------------------------------


def episodes(ctx: Context, who: Principal) -> list[EpisodeOut]:
    """One row per (run, episode), newest activity first. An episode's state is its
    newest session's."""
    everything = ctx.memo("episodes", lambda: _episodes(ctx))
    return everything if who.all_runs else [e for e in everything if who.may_read(e.run_id)]


def _episodes(ctx: Context) -> list[EpisodeOut]:
    groups: dict[tuple[str, str], list[SessionInfo]] = {}
    for s in ctx.index.snapshot_sessions():
        groups.setdefault((s.run_id, s.episode_id), []).append(s)
    out = []
    for (run_id, episode_id), sessions in groups.items():
        sessions.sort(key=lambda s: s.created)
        newest = sessions[-1]
        worst = max(s.worst for s in sessions)
        out.append(EpisodeOut(
            episode_id=episode_id, run_id=run_id,
            state=ctx.index.session_state(newest),  # type: ignore[arg-type]
            sessions=[s.session_id for s in sessions], reason=newest.reason,
            network_phase=newest.network_phase, calls=sum(s.calls for s in sessions),
            verdicts=sum(s.verdicts for s in sessions), worst=_sev_name(worst),
            first_wall=sessions[0].created, last_wall=max(s.last_wall for s in sessions)))
    out.sort(key=lambda e: e.last_wall, reverse=True)
    return out


def verdicts(ctx: Context, who: Principal, *, run: str | None = None,
             episode: str | None = None, step: int | None = None,
             severity: str | None = None, category: str | None = None,
             rule: str | None = None) -> list[Record]:
    least = severity_rank(severity) if severity else -1
    newest_first = ctx.memo("verdicts", lambda: sorted(
        ctx.index.snapshot_verdicts(), key=lambda r: (r.wall, r.seq), reverse=True))
    return [r for r in newest_first
            if who.may_read(r.run_id)
             and (run is None or r.run_id == run)
             and (episode is None or r.data.get("episode_id") == episode)
             and (step is None or r.data.get("step") == step)
             and (least < 0 or severity_rank(r.data.get("severity")) >= least)
             and (category is None or category in (r.data.get("categories") or []))
             and (rule is None or r.data.get("rule_id") == rule)]


def step_stats(ctx: Context, who: Principal, run: str | None = None,
               episode: str | None = None) -> list[StepStats]:
    """Per agent step: calls, calls with a violation, verdicts by category."""
    return ctx.memo(("steps", who.name, who.run, run, episode),
                    lambda: _step_stats(ctx, who, run, episode))


def _step_stats(ctx: Context, who: Principal, run: str | None,
                episode: str | None) -> list[StepStats]:
    calls: Counter[int] = Counter()
    for c in ctx.index.snapshot_calls():
        if (who.may_read(c.run_id) and (run is None or c.run_id == run)
                and (episode is None or c.episode_id == episode) and c.step is not None):
            calls[c.step] += 1
    violating: dict[int, set[tuple[str, str]]] = {}
    nverdicts: Counter[int] = Counter()
    cats: dict[int, Counter[str]] = {}
    for r in verdicts(ctx, who, run=run, episode=episode):
        step = r.data.get("step")
        if not isinstance(step, int) or not ctx.is_violation(r):
            continue
        nverdicts[step] += 1
        violating.setdefault(step, set()).add((str(r.data.get("session_id")),
                                               str(r.data.get("call_id"))))
        for cat in r.data.get("categories") or ["uncategorised"]:
            cats.setdefault(step, Counter())[str(cat)] += 1
    out = []
    for step in sorted(set(calls) | set(nverdicts)):
        n = max(calls[step], len(violating.get(step, ())))
        bad = len(violating.get(step, ()))
        out.append(StepStats(step=step, calls=n, violating_calls=bad,
                             rate=round(bad / n, 6) if n else 0.0, verdicts=nverdicts[step],
                             by_category=dict(cats.get(step, {}))))
    return out


def audit_status(ctx: Context, who: Principal, run: str | None = None) -> list[AuditOut]:
    out = []
    for run_id in ctx.index.run_ids():
        if not who.may_read(run_id) or (run is not None and run != run_id):
            continue
        path = ctx.index.run_path(run_id)
        if path is None:
            continue
        try:
            info = checkpoint_info(path)
        except AuditError:
            continue
        result, at = ctx.verifier.result(run_id)
        verify = None
        if result is not None:
            p = result.problem
            verify = VerifyOut(ok=result.ok, kind=p.kind if p else None,
                               seq=p.seq if p else None, detail=p.detail if p else None,
                               records=result.records, checkpoints=result.checkpoints,
                               exported=result.exported, latest_exported=result.latest_exported,
                               key_source=result.key_source, notes=list(result.notes),
                               verified_at=at)
        out.append(AuditOut(run_id=run_id, records=info.records,
                            checkpoint_size=info.checkpoint_size,
                            checkpoint_time=info.checkpoint_time,
                            checkpoint_age_seconds=info.age(),
                            unanchored_records=info.unanchored, verify=verify))
    return out


def breakers(ctx: Context, who: Principal) -> list[BreakerOut]:
    return [breaker_out(s) for s in run_summaries(ctx.state) if who.may_read(s.run_id)]


_Q0 = Query(None, description="only in this state")
_Q1 = Query(None, max_length=40, description="only this outcome")
_Q2 = Query(None, max_length=200, description="only this call")
_Q3 = Query(None, max_length=40, description="only this kind")
_Q4 = Query(-1, ge=-1, le=2**62, description="only records after "
                                   "this position (per run)")
_Q5 = Query(None, max_length=200, description="only this rule")
_Q6 = Query(None, max_length=100, description="only this action")
_Q7 = Query("both")


# -- routes ---------------------------------------------------------------------------


@router.get("/runs", response_model=list[RunOut], tags=["runs"])
def list_runs(
        ctx: Ctx,
        who: Reader,
        limit: int = Limit,
        offset: int = Offset,
) -> list[RunOut]:
    sizes = ctx.index.run_sizes()
    sessions = ctx.visible_sessions(who)
    calls = ctx.index.snapshot_calls()
    vcount = Counter(r.run_id for r in ctx.index.snapshot_verdicts())
    summaries = {s.run_id: s for s in run_summaries(ctx.state)}
    out = []
    for run_id, (records, last) in sizes.items():
        if not who.may_read(run_id):
            continue
        mine = [s for s in sessions if s.run_id == run_id]
        summary = summaries.get(run_id)
        out.append(RunOut(
            run_id=run_id, records=records, last_wall=last, sessions=len(mine),
            live_sessions=sum(1 for s in mine if ctx.index.session_state(s) in ("live",
                                                                                 "frozen")),
            episodes=len({s.episode_id for s in mine}),
            calls=sum(1 for c in calls if c.run_id == run_id), verdicts=vcount[run_id],
            breaker=breaker_out(summary) if summary else None))
    out.sort(key=lambda r: r.last_wall, reverse=True)
    return _page(out, offset, limit)


@router.get("/episodes", response_model=list[EpisodeOut], tags=["episodes"])
def list_episodes(
        ctx: Ctx,
        who: Reader,
        run: str | None = RunQ,
        state: SessionState | None = _Q0,
        limit: int = Limit,
        offset: int = Offset,
) -> list[EpisodeOut]:
    found = [e for e in episodes(ctx, who) if (run is None or e.run_id == run)
             and (state is None or e.state == state)]
    return _page(found, offset, limit)


@router.get("/episodes/{episode_id}", response_model=EpisodeDetail, tags=["episodes"])
def get_episode(
        episode_id: str,
        ctx: Ctx,
        who: Reader,
        run: str | None = RunQ,
) -> EpisodeDetail:
    found = [e for e in episodes(ctx, who) if e.episode_id == episode_id
             and (run is None or e.run_id == run)]
    if not found:
        raise HTTPException(404, f"no episode {episode_id!r}")
    ep = found[0]
    calls = sorted((c for c in ctx.index.snapshot_calls() if c.episode_id == episode_id
                    and c.run_id == ep.run_id), key=lambda c: (c.start or 0.0))
    acts = [a for a in ctx.index.snapshot_actions() if a.run_id == ep.run_id
            and a.data.get("episode_id") == episode_id]
    return EpisodeDetail(
        **ep.model_dump(), calls_list=[call_out(c) for c in calls],
        verdicts_list=[verdict_out(r) for r in verdicts(ctx, who, run=ep.run_id,
                                                          episode=episode_id)],
        actions_list=[action_out(a) for a in acts])


@router.get("/sessions", response_model=list[SessionOut], tags=["sessions"])
def list_sessions(
        ctx: Ctx,
        who: Reader,
        run: str | None = RunQ,
        episode: str | None = EpisodeQ,
        state: SessionState | None = _Q0,
        limit: int = Limit,
        offset: int = Offset,
) -> list[SessionOut]:
    out = [session_out(ctx.index, s) for s in ctx.visible_sessions(who)
           if (run is None or s.run_id == run) and (episode is None or s.episode_id == episode)]
    out = [s for s in out if state is None or s.state == state]
    out.sort(key=lambda s: s.created, reverse=True)
    return _page(out, offset, limit)


@router.get("/calls", response_model=list[CallOut], tags=["calls"])
def list_calls(
        ctx: Ctx,
        who: Reader,
        run: str | None = RunQ,
        episode: str | None = EpisodeQ,
        step: int | None = StepQ,
        outcome: str | None = _Q1,
        limit: int = Limit,
        offset: int = Offset,
) -> list[CallOut]:
    found = [c for c in ctx.index.snapshot_calls() if who.may_read(c.run_id)
             and (run is None or c.run_id == run) and (episode is None or c.episode_id == episode)
             and (step is None or c.step == step) and (outcome is None or c.outcome == outcome)]
    found.sort(key=lambda c: c.start or 0.0, reverse=True)
    return [call_out(c) for c in _page(found, offset, limit)]


@router.get("/events", response_model=list[EventOut], tags=["events"])
def list_events(
        ctx: Ctx,
        who: Reader,
        run: str | None = RunQ,
        episode: str | None = EpisodeQ,
        step: int | None = StepQ,
        call: str | None = _Q2,
        kind: str | None = _Q3,
        after: int = _Q4,
        limit: int = Limit,
) -> list[EventOut]:
    """Event records in log order (oldest first), read from the trail itself."""
    if run is not None and not who.may_read(run):
        return []
    if run is None and not who.all_runs:
        run = who.run
    out: list[EventOut] = []
    try:
        for r in ctx.index.events(run=run, episode=episode, after=after):
            d = r.data
            if ((step is None or d.get("step") == step)
                    and (call is None or d.get("call_id") == call)
                    and (kind is None or d.get("kind") == kind)):
                out.append(event_out(r))
                if len(out) >= limit:
                    break
    except AuditError as exc:
        raise HTTPException(503, f"cannot read the audit trail: {exc}") from None
    return out


@router.get("/verdicts", response_model=list[VerdictOut], tags=["verdicts"])
def list_verdicts(
        ctx: Ctx,
        who: Reader,
        run: str | None = RunQ,
        episode: str | None = EpisodeQ,
        step: int | None = StepQ,
        severity: SeverityName | None = SeverityQ,
        category: str | None = CategoryQ,
        rule: str | None = _Q5,
        limit: int = Limit,
        offset: int = Offset,
) -> list[VerdictOut]:
    found = verdicts(ctx, who, run=run, episode=episode, step=step, severity=severity,
                     category=category, rule=rule)
    return [verdict_out(r) for r in _page(found, offset, limit)]


@router.get("/actions", response_model=list[ActionOut], tags=["actions"])
def list_actions(
        ctx: Ctx,
        who: Reader,
        run: str | None = RunQ,
        episode: str | None = EpisodeQ,
        step: int | None = StepQ,
        name: str | None = _Q6,
        limit: int = Limit,
        offset: int = Offset,
) -> list[ActionOut]:
    found = [action_out(a) for a in ctx.index.snapshot_actions() if who.may_read(a.run_id)
             and (run is None or a.run_id == run)
             and (episode is None or a.data.get("episode_id") == episode)
             and (step is None or a.data.get("step") == step)]
    found = [a for a in found if name is None or a.name == name]
    found.sort(key=lambda a: (a.wall, a.seq), reverse=True)
    return _page(found, offset, limit)


@router.get("/audit", response_model=list[AuditOut], tags=["audit"])
def get_audit(
        ctx: Ctx,
        who: Reader,
        run: str | None = RunQ,
) -> list[AuditOut]:
    return audit_status(ctx, who, run)


@router.post("/audit/verify", response_model=list[AuditOut], tags=["audit"])
def verify_now(
        ctx: Ctx,
        who: AllRuns,
) -> list[AuditOut]:
    """Re-verify every run now (hashes every record: costs about 1 s per million)."""
    ctx.verifier.verify_now()
    return audit_status(ctx, who)


@router.get("/policies", response_model=list[PolicyOut], tags=["policies"])
def list_policies(
        ctx: Ctx,
        who: Reader,
        run: str | None = RunQ,
        limit: int = Limit,
        offset: int = Offset,
) -> list[PolicyOut]:
    out = [_policy(r) for r in ctx.index.snapshot_policies() if who.may_read(r.run_id)
           and (run is None or r.run_id == run)]
    out.sort(key=lambda p: p.wall, reverse=True)
    return _page(out, offset, limit)


@router.get("/policies/{policy_hash}", response_model=PolicyDetail, tags=["policies"])
def get_policy(
        policy_hash: str,
        ctx: Ctx,
        who: Reader,
) -> PolicyDetail:
    for r in ctx.index.snapshot_policies():
        if who.may_read(r.run_id) and r.data.get("hash") == policy_hash:
            return PolicyDetail(**_policy(r).model_dump(), text=str(r.data.get("text", "")))
    raise HTTPException(404, f"no policy {policy_hash!r}")


def _policy(r: Record) -> PolicyOut:
    return PolicyOut(hash=str(r.data.get("hash", "")), name=str(r.data.get("name", "")),
                     run_id=r.run_id, seq=r.seq, wall=r.wall)


@router.get("/stats/steps", response_model=list[StepStats], tags=["statistics"])
def get_step_stats(
        ctx: Ctx,
        who: Reader,
        run: str | None = RunQ,
        episode: str | None = EpisodeQ,
) -> list[StepStats]:
    """Violations (verdicts at or above the server's violation severity) per agent step."""
    return step_stats(ctx, who, run, episode)


@router.get("/breakers", response_model=list[BreakerOut], tags=["runs"])
def list_breakers(
        ctx: Ctx,
        who: Reader,
) -> list[BreakerOut]:
    """Circuit breaker state and per-training-step rates, from the runs' summaries."""
    return breakers(ctx, who)


@router.get("/stream", tags=["stream"], response_class=EventSourceResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "server-sent events: `verdict` and `action`, "
                             "data = the JSON of /verdicts or /actions items; `dropped` "
                             "when this client fell behind (then the stream ends)"}})
async def stream(
        request: Request,
        ctx: Ctx,
        who: Reader,
        run: str | None = RunQ,
        episode: str | None = EpisodeQ,
        severity: SeverityName | None = SeverityQ,
        category: str | None = CategoryQ,
        types: Literal["verdict", "action", "both"] = _Q7,
) -> EventSourceResponse:
    least = severity_rank(severity) if severity else -1

    def accepts(r: Record) -> bool:
        if not who.may_read(r.run_id) or (run is not None and r.run_id != run):
            return False
        if episode is not None and r.data.get("episode_id") != episode:
            return False
        if r.type == "verdict":
            return (types != "action"
                    and (least < 0 or severity_rank(r.data.get("severity")) >= least)
                    and (category is None or category in (r.data.get("categories") or [])))
        return types != "verdict" and least < 0 and category is None

    sub = ctx.broadcaster.subscribe(accepts)

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            yield {"event": "hello", "data": json.dumps({"principal": who.name})}
            while True:
                item = await sub.queue.get()
                if item is DROPPED:
                    yield {"event": "dropped", "data": json.dumps(
                        {"detail": "this client fell behind; re-read from the API"})}
                    return
                assert isinstance(item, Record)
                body = verdict_out(item) if item.type == "verdict" else action_out(item)
                yield {"event": item.type, "id": f"{item.run_id}:{item.seq}",
                       "data": body.model_dump_json()}
        finally:
            ctx.broadcaster.unsubscribe(sub)

    return EventSourceResponse(events(), ping=10, send_timeout=30)


@router.post("/episodes/{episode_id}/actions", response_model=ActionResult, tags=["actions"],
             responses={401: {"description": "no valid token (recorded)"},
                        403: {"description": "not the admin token (recorded)"},
                        404: {"description": "no such episode"},
                        409: {"description": "no live session of the episode in this process"},
                        501: {"description": "this server holds no session handles"}})
def act(
        episode_id: str,
        body: ActionRequest,
        request: Request,
        ctx: Ctx,
        who: HeaderPrincipal,
) -> JSONResponse:
    """Freeze, thaw, terminate or quarantine an episode, or switch its network phase.
    Admin token in the Authorization header only; every attempt is recorded in the
    run's audit trail as an operator action."""
    client = request.client.host if request.client else "?"
    everyone = Principal("-", True, "*")
    found = episodes(ctx, everyone)
    matches = [e for e in found if e.episode_id == episode_id]
    known = matches[0] if matches else None
    if known is None or (who is not None and not who.may_read(known.run_id)):
        if who is None:  # an unauthenticated client learns nothing about episodes
            raise HTTPException(401, "a bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})
        raise HTTPException(404, f"no episode {episode_id!r}")
    if who is None or not who.admin:
        status = 401 if who is None else 403
        why = ("refused: no valid bearer token in the Authorization header" if who is None
               else f"refused: token {who.name} is not the admin token")
        record, suppressed = ctx.refusals.admit(client, time.monotonic())
        if not record:  # over this client's allowance: answered, counted, not recorded
            return _answer(status, "refused", why, -1)
        if suppressed:
            why += (f" ({suppressed} earlier refused attempt(s) from this client were not "
                    "recorded individually)")
        seq = _record(ctx, known, body, "refused", False, why, who, client)
        return _answer(status, "refused", why, seq)
    _record(ctx, known, body, "requested", False, "operator request accepted", who, client)
    if ctx.control is None:
        why = ("not carried out: no live session handle in this process (a standalone "
               "server over a state directory cannot reach sessions of other processes)")
        seq = _record(ctx, known, body, "not carried out", False, why, who, client)
        return _answer(501, "not carried out", why, seq)
    try:
        done = ctx.control.act(episode_id, body.action, reason=body.reason or "operator",
                               phase=body.phase)
    except NoHandle as exc:
        seq = _record(ctx, known, body, "not carried out", False, f"not carried out: {exc}",
                      who, client)
        return _answer(exc.status, "not carried out", str(exc), seq)
    except Exception as exc:  # noqa: BLE001 - the failure is recorded and answered
        why = f"failed: {type(exc).__name__}: {exc}"
        seq = _record(ctx, known, body, "failed", False, why, who, client)
        return _answer(500 if not isinstance(exc, ValueError) else 400, "failed", why, seq)
    seq = _record(ctx, known, body, "done", True, done, who, client)
    return _answer(200, "done", done, seq)


def _record(ctx: Context, ep: EpisodeOut, body: ActionRequest, stage: str, ok: bool,
            detail: str, who: Principal | None, client: str) -> int:
    try:
        assert ctx.recorder is not None
        return record_operator_action(
            ctx.recorder, run_id=ep.run_id, episode_id=ep.episode_id,
            session_id=ep.sessions[-1] if ep.sessions else "", action=body.action, stage=stage,
            ok=ok, detail=detail, principal=who.name if who else "(none)", client=client,
            reason=body.reason, phase=body.phase)
    except AuditError as exc:
        # nothing is done that cannot be recorded
        raise HTTPException(503, f"cannot record the operator action: {exc}") from None


def _answer(status: int, stage: str, detail: str, seq: int) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(ActionResult(status=status, stage=stage, detail=detail,
                                     seq=seq).model_dump(), status_code=status, headers=headers)


def visible(items: Iterable[Any], who: Principal) -> list[Any]:
    return [i for i in items if who.may_read(i.run_id)]
