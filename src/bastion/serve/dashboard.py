"""The dashboard: HTML pages served by the same process, no build step.

Panels are rendered on the server from the same functions the API uses (so the page
and the API never disagree) and refreshed every two seconds by a few lines of inline
script that fetch ``/ui/fragments/...``; the incident feed follows the live stream
(SSE) and shows a verdict as soon as its record is durable. The episode page embeds
the episode's ``bastion report --html`` page, re-rendered whenever the episode grows.

A browser logs in once with ``/ui/login?token=...``: the token is checked and moved
into an HttpOnly, SameSite=Strict cookie, and the address bar is cleared of it.
"""

from __future__ import annotations

import time
from collections import Counter
from html import escape

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from ..audit.errors import AuditError
from ..audit.html import render_html
from ..audit.reader import episode_records
from ..audit.report import describe_connection, report_from_records
from ..events import Event
from .api import audit_status, breakers, episodes, step_stats, verdicts
from .auth import Principal
from .charts import category_bars, decision_bars, step_chart, training_chart
from .context import COOKIE, Context, Ctx, Reader
from .models import EpisodeOut

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
_TOKEN = Query(..., max_length=200)
_RUN = Query(None, max_length=200)

_STATE_COLOUR = {"live": "#2e7d32", "frozen": "#1565c0", "terminated": "#6a1b9a",
                 "quarantined": "#b71c1c", "closed": "#78909c", "lost": "#ef6c00"}
_SEV_COLOUR = {"info": "#90a4ae", "low": "#4fc3f7", "medium": "#ffb300", "high": "#f4511e",
               "critical": "#b71c1c"}

_CSS = """
*{box-sizing:border-box}
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:0;
background:#f2f4f7;color:#1d2330}
header{background:#1d2330;color:#fff;padding:12px 24px;display:flex;align-items:center;gap:18px}
header h1{margin:0;font-size:20px} header a{color:#b8c0d0;text-decoration:none;font-size:13px}
header .live{margin-left:auto;font-size:12px;color:#9be7a1}
main{padding:16px 24px;display:grid;grid-template-columns:repeat(12,1fr);gap:14px}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12);padding:12px 16px;
min-width:0}
.w12{grid-column:span 12}.w8{grid-column:span 8}.w7{grid-column:span 7}.w6{grid-column:span 6}
.w5{grid-column:span 5}.w4{grid-column:span 4}
h2{font-size:15px;margin:0 0 10px;color:#334}
.tiles{display:flex;gap:12px;flex-wrap:wrap}
.tile{flex:1;min-width:120px;background:#fff;border-radius:8px;padding:10px 14px;
box-shadow:0 1px 3px rgba(0,0,0,.12)}
.tile b{display:block;font-size:26px} .tile span{font-size:12px;color:#667}
.tile span.pill{color:#fff;font-size:13px} .tile b .pill{font-size:18px;padding:2px 12px}
table{border-collapse:collapse;width:100%;font-size:13px}
td,th{text-align:left;padding:4px 6px;border-bottom:1px solid #e8ebf0;vertical-align:top}
th{color:#667;font-weight:600;font-size:12px}
.pill{display:inline-block;padding:1px 8px;border-radius:9px;color:#fff;font-size:12px}
.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
#feed{max-height:420px;overflow-y:auto}
#feed .item{border-left:4px solid #ccc;padding:5px 8px;margin-bottom:6px;background:#fafbfc;
border-radius:4px;font-size:13px}
#feed .item.new{animation:flash 1.5s ease-out}
@keyframes flash{from{background:#fff3c4}to{background:#fafbfc}}
#feed .attr{color:#667;font-size:12px}
.ok{color:#2e7d32;font-weight:600}.bad{color:#c62828;font-weight:600}.warn{color:#ef6c00}
a{color:#1e56b3}
iframe{width:100%;border:0;min-height:300px;background:#fff;border-radius:8px}
.legend span{margin-right:10px;font-size:12px}
.breaker h3{font-size:13px;margin:0 0 4px} .breaker p{font-size:13px;margin:0 0 8px}
.dot{display:inline-block;width:10px;height:10px;border-radius:5px;margin-right:4px}
"""


def _t(value: object) -> str:
    return escape(str(value), quote=True)


def _ago(wall: float | None) -> str:
    if not wall:
        return "?"
    seconds = max(0.0, time.time() - wall)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _pill(text: str, colour: str) -> str:
    return f'<span class="pill" style="background:{colour}">{_t(text)}</span>'


def _page(title: str, body: str, script: str = "") -> HTMLResponse:
    html = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_t(title)}</title><style>{_CSS}</style></head><body>"
            '<header><h1>bastion</h1><a href="/ui">overview</a>'
            '<a href="/api/v1/openapi.json">API</a>'
            '<span class="live" id="conn">connecting…</span></header>'
            f"{body}<script>{script}</script></body></html>")
    return HTMLResponse(html, headers={"Cache-Control": "no-store",
                                       "Content-Security-Policy":
                                       "default-src 'self'; style-src 'unsafe-inline'; "
                                       "script-src 'unsafe-inline'; img-src 'self' data:; "
                                       "frame-ancestors 'self'"})


# -- login ------------------------------------------------------------------------------


@router.get("/ui/login")
def login(
        request: Request,
        ctx: Ctx,
        token: str = _TOKEN,
) -> RedirectResponse:
    if ctx.tokens.authenticate(token) is None:
        raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})
    response = RedirectResponse("/ui", status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https", max_age=7 * 86400)
    return response


@router.get("/")
def root(
        _: Reader,
) -> RedirectResponse:
    return RedirectResponse("/ui", status_code=303)


# -- overview ---------------------------------------------------------------------------


def _tiles(ctx: Context, who: Principal, eps: list[EpisodeOut]) -> str:
    states = Counter(e.state for e in eps)
    vs = verdicts(ctx, who)
    sev = Counter(str(r.data.get("severity")) for r in vs)
    acts = [a for a in ctx.index.snapshot_actions() if who.may_read(a.run_id)]
    audits = audit_status(ctx, who)
    bad = [a.run_id for a in audits if a.verify is not None and not a.verify.ok]
    tiles = [
        ("live episodes", states["live"] + states["frozen"], "tile-live"),
        ("episodes", len(eps), "tile-episodes"),
        ("tool calls", sum(e.calls for e in eps), "tile-calls"),
        ("verdicts", len(vs), "tile-verdicts"),
        ("high + critical", sev["high"] + sev["critical"], "tile-severe"),
        ("actions taken", len(acts), "tile-actions"),
        ("contained (terminated / quarantined)",
         states["terminated"] + states["quarantined"], "tile-contained"),
    ]
    html = "".join(f'<div class="tile" id="{tid}"><b>{n}</b><span>{_t(label)}</span></div>'
                   for label, n, tid in tiles)
    chain = ('<b class="bad">TAMPERED</b>' if bad else '<b class="ok">intact</b>'
             if audits and all(a.verify is not None for a in audits) else "<b>…</b>")
    html += f'<div class="tile" id="tile-chain">{chain}<span>audit chain</span></div>'
    return html


def _episodes_table(ctx: Context, eps: list[EpisodeOut]) -> str:
    if not eps:
        return '<p class="warn">no episodes in the audit trail yet</p>'
    rows = []
    for e in eps[:200]:
        worst = (_pill(e.worst, _SEV_COLOUR.get(e.worst, "#999")) if e.worst else "")
        rows.append(
            f'<tr class="episode" data-episode="{_t(e.episode_id)}" data-state="{_t(e.state)}">'
            f'<td><a href="/ui/episodes/{_t(e.episode_id)}?run={_t(e.run_id)}">'
            f'{_t(e.episode_id)}</a></td><td class="mono">{_t(e.run_id)}</td>'
            f'<td>{_pill(e.state, _STATE_COLOUR.get(e.state, "#999"))}</td>'
            f'<td>{e.calls}</td><td>{e.verdicts} {worst}</td>'
            f'<td>{_t(e.network_phase or "")}</td><td>{_t(_ago(e.last_wall))}</td>'
            f'<td class="mono">{_t((e.reason or "")[:80])}</td></tr>')
    return ('<table id="episodes"><tr><th>episode</th><th>run</th><th>state</th><th>calls</th>'
            '<th>verdicts</th><th>net phase</th><th>last activity</th><th>why it ended</th>'
            f'</tr>{"".join(rows)}</table>')


def _audit_table(ctx: Context, who: Principal) -> str:
    rows = []
    for a in audit_status(ctx, who):
        if a.verify is None:
            status = '<span class="warn">not verified yet</span>'
        elif a.verify.ok:
            status = '<span class="ok">OK</span>'
        else:
            status = (f'<span class="bad">{_t(a.verify.kind)} at record {_t(a.verify.seq)}'
                      f'</span>')
        age = f"{a.checkpoint_age_seconds:.0f} s" if a.checkpoint_age_seconds is not None \
            else "none"
        tail = (f'<span class="warn">{a.unanchored_records}</span>' if a.unanchored_records
                else "0")
        rows.append(f'<tr><td class="mono">{_t(a.run_id)}</td><td>{a.records}</td>'
                    f'<td>{_t(a.checkpoint_size)}</td><td>{age}</td><td>{tail}</td>'
                    f'<td>{status}</td></tr>')
    if not rows:
        return "<p>no audit logs</p>"
    return ('<table id="audit"><tr><th>run</th><th>records</th><th>last checkpoint</th>'
            '<th>checkpoint age</th><th>unanchored</th><th>verify</th></tr>'
            f'{"".join(rows)}</table>')


def _breaker_panel(ctx: Context, who: Principal) -> str:
    found = breakers(ctx, who)
    if not found:
        return ('<p id="breaker-none">no run summary in this state directory: the circuit '
                'breaker is evaluated by the trainer\'s RunMonitor, which writes '
                '<span class="mono">runs/&lt;run&gt;.json</span></p>')
    parts = []
    for b in found:
        state = (f'<p class="bad" id="breaker-tripped">TRIPPED: {_t(b.reason)}</p>' if b.tripped
                 else f'<p class="ok">not tripped: {b.violating_episodes}/{b.episodes} '
                      f'episodes violated (trips above {b.breaker_rate or 0:.0%} in a '
                      f'training step of at least {b.breaker_min_episodes} episodes)</p>')
        parts.append(f'<div class="breaker"><h3 class="mono">{_t(b.run_id)}</h3>{state}'
                     f'{training_chart(b.training_steps, b.breaker_rate)}</div>')
    return "".join(parts)


def _overview_parts(ctx: Context, who: Principal) -> dict[str, str]:
    return ctx.memo(("overview", who.name, who.run), lambda: _compute_overview(ctx, who))


def _compute_overview(ctx: Context, who: Principal) -> dict[str, str]:
    eps = episodes(ctx, who)
    cats: Counter[str] = Counter()
    for r in verdicts(ctx, who):
        if ctx.is_violation(r):
            for c in r.data.get("categories") or ["uncategorised"]:
                cats[str(c)] += 1
    return {
        "tiles": _tiles(ctx, who, eps),
        "episodes": _episodes_table(ctx, eps),
        "steps": step_chart(step_stats(ctx, who)),
        "categories": category_bars(cats),
        "audit": _audit_table(ctx, who),
        "breaker": _breaker_panel(ctx, who),
    }


_FEED_JS = r"""
const SEV = {info:'#90a4ae',low:'#4fc3f7',medium:'#ffb300',high:'#f4511e',critical:'#b71c1c'};
const seen = new Set();
function el(tag, cls, text){const e=document.createElement(tag); if(cls) e.className=cls;
  if(text!==undefined) e.textContent=text; return e;}
function feedItem(v, fresh){
  const key = v.run_id+':'+v.seq; if(seen.has(key)) return; seen.add(key);
  const d = el('div', 'item'+(fresh?' new':'')); d.dataset.key = key;
  d.dataset.rule = v.rule_id; d.style.borderLeftColor = SEV[v.severity]||'#999';
  const pill = el('span','pill',v.severity); pill.style.background = SEV[v.severity]||'#999';
  d.append(pill, ' ', el('b', null, v.rule_id), ' ', el('span', null, v.message),
           ' → ', el('span','mono', v.action));
  const a = el('div','attr');
  const link = el('a', null, 'episode '+v.episode_id);
  link.href = '/ui/episodes/'+encodeURIComponent(v.episode_id)+'?run='+
    encodeURIComponent(v.run_id)+(v.call_id?'#call-'+encodeURIComponent(v.call_id):'');
  a.append('run '+v.run_id+' · ', link, ' · step '+(v.step??'?')+' · call '+(v.call_id??'-')+
           ' · '+new Date(v.wall*1000).toLocaleTimeString()+' · '+(v.categories||[]).join(', '));
  d.append(a);
  const feed = document.getElementById('feed');
  if (fresh) feed.prepend(d); else feed.append(d);
}
async function loadFeed(q){
  const r = await fetch('/api/v1/verdicts?limit=100'+q); if(!r.ok) return;
  for (const v of await r.json()) feedItem(v, false);
}
function follow(q){
  const es = new EventSource('/api/v1/stream?types=verdict'+q);
  const conn = document.getElementById('conn');
  let first = true;
  es.addEventListener('hello', ()=>{conn.textContent='● live'; conn.style.color='#9be7a1';
    if (!first) loadFeed(q); first = false;});  // after a reconnect: fill the gap
  es.addEventListener('verdict', (m)=>{feedItem(JSON.parse(m.data), true);
    if (window.onVerdict) window.onVerdict();});
  es.addEventListener('dropped', ()=>{conn.textContent='fell behind: reload';});
  es.onerror = ()=>{conn.textContent='reconnecting…'; conn.style.color='#ffb300';};
}
"""

_REFRESH_JS = r"""
async function refresh(url){
  try { const r = await fetch(url); if(!r.ok) return null; const parts = await r.json();
    for (const [id, html] of Object.entries(parts)) {
      const e = document.getElementById('p-'+id); if (e && e.innerHTML !== html) e.innerHTML = html; }
    return parts; } catch(e) { return null; }
}
"""


@router.get("/ui", response_class=HTMLResponse)
def overview(
        ctx: Ctx,
        who: Reader,
) -> HTMLResponse:
    p = _overview_parts(ctx, who)
    body = (
        '<main>'
        f'<div class="w12 tiles" id="p-tiles">{p["tiles"]}</div>'
        f'<section class="card w7"><h2>Episodes</h2><div id="p-episodes">{p["episodes"]}'
        '</div></section>'
        '<section class="card w5"><h2>Incident feed <small>(live)</small></h2>'
        '<div id="feed"></div></section>'
        '<section class="card w7"><h2>Violations per agent step</h2>'
        f'<div id="p-steps">{p["steps"]}</div></section>'
        '<section class="card w5"><h2>Violations by category</h2>'
        f'<div id="p-categories">{p["categories"]}</div></section>'
        '<section class="card w7"><h2>Audit trail</h2>'
        f'<div id="p-audit">{p["audit"]}</div></section>'
        '<section class="card w5"><h2>Circuit breaker (violation rate per training step)</h2>'
        f'<div id="p-breaker">{p["breaker"]}</div></section>'
        '</main>')
    script = _FEED_JS + _REFRESH_JS + (
        "loadFeed('').then(()=>follow(''));"
        "setInterval(()=>refresh('/ui/fragments/overview'), 2000);"
        # a verdict on the feed: bring the counters and charts up to it soon
        "let soon=null; window.onVerdict=()=>{if(!soon) soon=setTimeout(()=>{soon=null;"
        "refresh('/ui/fragments/overview');}, 300);};")
    return _page("bastion: overview", body, script)


@router.get("/ui/fragments/overview")
def overview_fragments(
        ctx: Ctx,
        who: Reader,
) -> JSONResponse:
    return JSONResponse(_overview_parts(ctx, who), headers={"Cache-Control": "no-store"})


# -- episode ----------------------------------------------------------------------------


def _find(ctx: Context, who: Principal, episode_id: str, run: str | None) -> EpisodeOut:
    for e in episodes(ctx, who):
        if e.episode_id == episode_id and (run is None or e.run_id == run):
            return e
    raise HTTPException(404, f"no episode {episode_id!r}")


def _network(ctx: Context, ep: EpisodeOut) -> tuple[str, str]:
    rows, decisions = [], Counter[str]()
    try:
        records = [r for r in ctx.index.events(run=ep.run_id, episode=ep.episode_id)
                   if str(r.data.get("kind")) in ("net.connect", "dns.query", "net.drop")]
    except AuditError:
        records = []
    for r in records[-300:]:
        event = Event.from_dict(r.data)
        f = event.fields
        decision = str(f.get("net.decision") or f.get("dns.decision") or "")
        decisions[decision or "?"] += 1
        colour = "#e53935" if decision == "deny" else "#00897b"
        rows.append(f'<tr><td>{_t(event.step if event.step is not None else "")}</td>'
                    f'<td class="mono">{_t(event.call_id or "")}</td>'
                    f'<td>{_pill(decision or "?", colour)}</td>'
                    f'<td class="mono">{_t(describe_connection(event)[:160])}</td>'
                    f'<td class="mono">{_t(str(f.get("net.reason") or f.get("net.rule") or "")[:80])}'
                    f'</td></tr>')
    table = ('<table id="network"><tr><th>step</th><th>call</th><th>decision</th><th>what</th>'
             f'<th>why</th></tr>{"".join(rows)}</table>' if rows else
             '<p>no connections or DNS lookups recorded</p>')
    return decision_bars(decisions), table


def _episode_parts(ctx: Context, who: Principal, ep: EpisodeOut) -> dict[str, str]:
    chart, table = _network(ctx, ep)
    stats = step_stats(ctx, who, ep.run_id, ep.episode_id)
    worst = _pill(ep.worst, _SEV_COLOUR.get(ep.worst, "#999")) if ep.worst else "none"
    head = (f'<div class="tiles"><div class="tile" id="ep-state">'
            f'<b>{_pill(ep.state, _STATE_COLOUR.get(ep.state, "#999"))}</b><span>state'
            f'{": " + _t(ep.reason) if ep.reason else ""}</span></div>'
            f'<div class="tile"><b>{ep.calls}</b><span>tool calls</span></div>'
            f'<div class="tile"><b>{ep.verdicts}</b><span>verdicts (worst {worst})</span></div>'
            f'<div class="tile"><b class="mono">{_t(ep.network_phase or "-")}</b>'
            f'<span>network phase</span></div>'
            f'<div class="tile"><b class="mono" style="font-size:14px">{_t(ep.run_id)}</b>'
            f'<span>run · sessions {_t(", ".join(ep.sessions))}</span></div></div>')
    return {"head": head, "netchart": chart, "network": table, "steps": step_chart(stats),
            "version": f"{ep.last_wall}:{ep.calls}:{ep.verdicts}:{ep.state}"}


@router.get("/ui/episodes/{episode_id}", response_class=HTMLResponse)
def episode_page(
        episode_id: str,
        ctx: Ctx,
        who: Reader,
        run: str | None = _RUN,
) -> HTMLResponse:
    ep = _find(ctx, who, episode_id, run)
    p = _episode_parts(ctx, who, ep)
    q = f"?run={escape(ep.run_id)}"
    body = (
        '<main>'
        f'<div class="w12"><h1 style="margin:0 0 8px">Episode {_t(ep.episode_id)}</h1>'
        f'<div id="p-head">{p["head"]}</div></div>'
        '<section class="card w6"><h2>Violations per agent step</h2>'
        f'<div id="p-steps">{p["steps"]}</div></section>'
        '<section class="card w6"><h2>Network decisions</h2>'
        f'<div id="p-netchart">{p["netchart"]}</div><div id="p-network" '
        f'style="max-height:260px;overflow-y:auto">{p["network"]}</div></section>'
        '<section class="card w12"><h2>Timeline, process trees and verdicts '
        '<small>(bastion report, live)</small></h2>'
        f'<iframe id="report" src="/ui/episodes/{_t(ep.episode_id)}/report{_t(q)}" '
        'title="episode report" onload="this.style.height=(this.contentDocument.body.'
        'scrollHeight+20)+\'px\'"></iframe></section>'
        '</main>')
    frag = f"/ui/episodes/{_t(ep.episode_id)}/fragments{_t(q)}"
    script = (_REFRESH_JS + f"let version={_js(p['version'])};"
              "document.getElementById('conn').textContent='● live';"
              "setInterval(async()=>{const parts=await refresh('" + frag + "');"
              "if(parts && parts.version!==version){version=parts.version;"
              "const f=document.getElementById('report');f.src=f.src;}}, 2000);")
    return _page(f"bastion: episode {ep.episode_id}", body, script)


def _js(text: str) -> str:
    import json

    return json.dumps(text).replace("<", "\\u003c")


@router.get("/ui/episodes/{episode_id}/fragments")
def episode_fragments(
        episode_id: str,
        ctx: Ctx,
        who: Reader,
        run: str | None = _RUN,
) -> JSONResponse:
    ep = _find(ctx, who, episode_id, run)
    return JSONResponse(_episode_parts(ctx, who, ep), headers={"Cache-Control": "no-store"})


@router.get("/ui/episodes/{episode_id}/report", response_class=HTMLResponse)
def episode_report(
        episode_id: str,
        ctx: Ctx,
        who: Reader,
        run: str | None = _RUN,
) -> HTMLResponse:
    ep = _find(ctx, who, episode_id, run)
    try:
        records, policies = episode_records(ctx.state.root, ep.episode_id)
    except AuditError as exc:
        raise HTTPException(404, str(exc)) from None
    # the same episode id may exist in another run, which this token may not read
    records = [r for r in records if r.run_id == ep.run_id]
    report = report_from_records(ep.episode_id, records, policies)
    return HTMLResponse(render_html(report), headers={
        "Cache-Control": "no-store",
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                   "frame-ancestors 'self'"})
