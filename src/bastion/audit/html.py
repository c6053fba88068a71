"""An episode report as one self-contained HTML page (inline CSS and SVG, no scripts,
no external resources), so it can be attached to an incident ticket and opened
anywhere. Everything that came from the sandbox (commands, process names, hosts) is
attacker-controlled text and is escaped before it is placed in the page.
"""

from __future__ import annotations

import datetime as _dt
from html import escape

from ..events import Severity
from .report import CallView, EpisodeReport, ProcessNode, describe_action, describe_connection

__all__ = ["render_html"]

_SEV_COLOUR = {
    Severity.INFO: "#90a4ae", Severity.LOW: "#4fc3f7", Severity.MEDIUM: "#ffb300",
    Severity.HIGH: "#f4511e", Severity.CRITICAL: "#b71c1c",
}
_OUTCOME_COLOUR = {
    "ok": "#43a047", "exit_nonzero": "#78909c", "timeout": "#fb8c00", "denied": "#e53935",
    "killed": "#c62828", "terminated": "#8e24aa",
}

_CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:0;
background:#f5f6f8;color:#1d2330}
header{background:#1d2330;color:#fff;padding:18px 28px}
header h1{margin:0 0 6px;font-size:22px}
header .meta{font-size:13px;color:#b8c0d0}
main{padding:18px 28px}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12);
padding:14px 18px;margin-bottom:16px}
h2{font-size:17px;margin:0 0 10px}
pre{background:#f0f2f5;padding:8px 10px;border-radius:6px;white-space:pre-wrap;
word-break:break-all;font-size:13px;margin:6px 0}
table{border-collapse:collapse;width:100%;font-size:13px}
td,th{text-align:left;padding:4px 8px;border-bottom:1px solid #e3e6eb}
.sev{display:inline-block;padding:1px 7px;border-radius:9px;color:#fff;font-size:12px}
.legend span{margin-right:14px;font-size:12px}
.dot{display:inline-block;width:10px;height:10px;border-radius:5px;margin-right:4px}
.outcome{font-size:12px;color:#fff;border-radius:4px;padding:1px 6px;margin-left:8px}
svg text{font-family:ui-monospace,Menlo,Consolas,monospace}
"""


def _t(value: object) -> str:
    return escape(str(value), quote=True)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def _offset(seconds: float, span: float) -> str:
    if span < 2:
        return f"+{seconds * 1000:.{0 if span >= 0.05 else 2}f} ms"
    return f"+{seconds:.1f} s"


def _timeline(report: EpisodeReport) -> str:
    width, label_w, lane_h, top = 1180, 330, 30, 34
    start = min([c.start for c in report.calls if c.start] + [report.start])
    end = max([c.end or c.start or 0 for c in report.calls] + [report.end])
    span = max(end - start, 1e-3)
    plot_w = width - label_w - 20

    def x(wall: float | None) -> float:
        return label_w + plot_w * (((wall or start) - start) / span)

    height = top + lane_h * max(len(report.calls), 1) + 24
    parts = [(f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" '
              f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
              f'aria-label="timeline of episode {_t(report.episode_id)}">'),
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>']
    for i in range(6):  # time axis
        tx = label_w + plot_w * i / 5
        parts.append(f'<line x1="{tx:.1f}" y1="{top - 8}" x2="{tx:.1f}" y2="{height - 18}" '
                     f'stroke="#e3e6eb"/>')
        anchor = "end" if i == 5 else "middle"
        parts.append(f'<text x="{tx:.1f}" y="{top - 14}" font-size="11" text-anchor="{anchor}" '
                     f'fill="#667">{_offset(span * i / 5, span)}</text>')
    for lane, call in enumerate(report.calls):
        y = top + lane * lane_h
        label = f"step {call.step if call.step is not None else '?'}  {call.command}"
        parts.append(f'<text x="8" y="{y + 18}" font-size="12" fill="#1d2330">'
                     f'<title>{_t(call.command)}</title>{_t(_clip(label, 42))}</text>')
        x0 = x(call.start)
        x1 = max(x(call.end or call.start) , x0 + 4)
        colour = _OUTCOME_COLOUR.get(call.outcome or "", "#90a4ae")
        parts.append(f'<rect class="call" x="{x0:.1f}" y="{y + 6}" width="{x1 - x0:.1f}" '
                     f'height="16" rx="3" fill="{colour}" opacity="0.85">'
                     f'<title>{_t(call.call_id)}: {_t(call.outcome or "running")}</title></rect>')
        for verdict in call.verdicts:
            vx = min(max(x(verdict.wall), label_w), width - 20)
            parts.append(f'<circle class="verdict" cx="{vx:.1f}" cy="{y + 14}" r="7" '
                         f'fill="{_SEV_COLOUR[verdict.severity]}" stroke="#fff" '
                         f'stroke-width="1.5"><title>{_t(verdict.severity)} '
                         f'{_t(verdict.rule_id)}: {_t(verdict.message)} -&gt; '
                         f'{_t(verdict.action.value)}</title></circle>')
        for action in call.actions:
            ax = min(max(x(action.wall), label_w), width - 20)
            parts.append(f'<rect class="action" x="{ax - 5:.1f}" y="{y + 9}" width="10" '
                         f'height="10" fill="#6a1b9a" transform="rotate(45 {ax:.1f} '
                         f'{y + 14})"><title>{_t(describe_action(action))}</title></rect>')
    parts.append("</svg>")
    return "".join(parts)


def _flatten(nodes: list[ProcessNode], depth: int = 0
             ) -> list[tuple[ProcessNode, int, ProcessNode | None]]:
    rows: list[tuple[ProcessNode, int, ProcessNode | None]] = []

    def walk(node: ProcessNode, d: int, parent: ProcessNode | None) -> None:
        rows.append((node, d, parent))
        for child in node.children:
            walk(child, d + 1, node)

    for node in nodes:
        walk(node, depth, None)
    return rows


def _tree(call: CallView) -> str:
    rows = _flatten(call.processes)
    conns = call.connections
    if not rows and not conns:
        return '<p class="empty">no process or network events recorded for this call</p>'
    row_h, width = 24, 1120
    height = 12 + row_h * (len(rows) + len(conns)) + 8
    parts = [(f'<svg class="proctree" xmlns="http://www.w3.org/2000/svg" width="{width}" '
              f'height="{height}" viewBox="0 0 {width} {height}">')]
    pos: dict[int, tuple[float, float]] = {}
    for i, (node, depth, parent) in enumerate(rows):
        x, y = 14 + depth * 26, 12 + i * row_h
        pos[id(node)] = (x, y)
        if parent is not None and id(parent) in pos:
            px, py = pos[id(parent)]
            parts.append(f'<path d="M{px + 5} {py + 10} V{y + 8} H{x}" fill="none" '
                         f'stroke="#9aa5b4"/>')
        exit_text = f"  exit {node.exit_code}" if node.exit_code is not None else ""
        parts.append(f'<circle cx="{x + 5}" cy="{y + 8}" r="5" fill="#3949ab"/>'
                     f'<text x="{x + 16}" y="{y + 12}" font-size="12">'
                     f'<tspan fill="#889">{node.pid}</tspan> <tspan font-weight="bold">'
                     f'{_t(node.name)}</tspan> {_t(_clip(node.cmdline, 110))}'
                     f'<tspan fill="#889">{_t(exit_text)}</tspan></text>')
    base = len(rows)
    for j, event in enumerate(conns):
        y = 12 + (base + j) * row_h
        denied = str(event.fields.get("net.decision") or event.fields.get("dns.decision")) == "deny"
        colour = "#e53935" if denied else "#00897b"
        parts.append(f'<rect x="14" y="{y + 3}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="30" y="{y + 12}" font-size="12" fill="{colour}">'
                     f'{_t(_clip(describe_connection(event), 140))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _step(call: CallView) -> str:
    outcome = ""
    if call.outcome:
        colour = _OUTCOME_COLOUR.get(call.outcome, "#90a4ae")
        code = f" ({call.exit_code})" if call.exit_code is not None else ""
        outcome = (f'<span class="outcome" style="background:{colour}">'
                   f'{_t(call.outcome)}{_t(code)}</span>')
    html = [(f'<section class="card step" id="call-{_t(call.call_id)}">'
             f'<h2>step {_t(call.step if call.step is not None else "?")} '
             f'<small>[{_t(call.call_id)}]</small>{outcome}</h2>'
             f'<pre>$ {_t(call.command)}</pre>'), _tree(call)]
    if call.verdicts or call.actions:
        html.append("<table><tr><th>severity</th><th>rule</th><th>message</th>"
                    "<th>action</th></tr>")
        for v in call.verdicts:
            html.append(f'<tr><td><span class="sev" style="background:'
                        f'{_SEV_COLOUR[v.severity]}">{_t(v.severity)}</span></td>'
                        f'<td>{_t(v.rule_id)}</td><td>{_t(v.message)}</td>'
                        f'<td>{_t(v.action.value)}</td></tr>')
        for a in call.actions:
            html.append(f'<tr><td></td><td>action</td><td>{_t(describe_action(a))}</td>'
                        f'<td>{_t(a.fields.get("action.name", ""))}</td></tr>')
        html.append("</table>")
    html.append("</section>")
    return "".join(html)


def render_html(report: EpisodeReport) -> str:
    when = _dt.datetime.fromtimestamp(report.start, _dt.UTC).strftime(
        "%Y-%m-%d %H:%M:%S UTC") if report.start else "?"
    legend = "".join(f'<span><i class="dot" style="background:{c}"></i>{_t(s)}</span>'
                     for s, c in _SEV_COLOUR.items())
    legend += "".join(f'<span><i class="dot" style="background:{c}"></i>{_t(o)}</span>'
                      for o, c in _OUTCOME_COLOUR.items())
    loose = ""
    if report.session_verdicts or report.session_actions:
        rows = "".join(f"<tr><td>{_t(v.severity)}</td><td>{_t(v.rule_id)}</td>"
                       f"<td>{_t(v.message)}</td><td>{_t(v.action.value)}</td></tr>"
                       for v in report.session_verdicts)
        rows += "".join(f"<tr><td></td><td>action</td><td>{_t(describe_action(a))}</td>"
                        f"<td></td></tr>" for a in report.session_actions)
        loose = (f'<section class="card"><h2>not charged to a call</h2><table>{rows}'
                 f"</table></section>")
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>bastion report: episode {_t(report.episode_id)}</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<header><h1>Episode {_t(report.episode_id)}</h1><div class=\"meta\">"
        f"run {_t(', '.join(report.run_ids))} · session {_t(', '.join(report.session_ids))}"
        f" · started {_t(when)} · {report.records} audit records · {len(report.calls)} tool "
        f"calls · {len(report.verdicts)} verdicts · policy "
        f"{_t(', '.join(report.policy_hashes) or '?')}</div></header><main>"
        f'<section class="card"><h2>Timeline</h2><div class="legend">{legend}</div>'
        f"{_timeline(report)}</section>"
        f'<div id="steps">{"".join(_step(c) for c in report.calls)}</div>{loose}'
        "</main></body></html>"
    )
