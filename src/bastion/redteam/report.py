"""The scorecard as a terminal table, JSON, and one self-contained HTML page."""

from __future__ import annotations

import html
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .runner import ScenarioResult, Scorecard

__all__ = ["render_html", "render_terminal", "write_html", "write_json"]


def _fmt(value: float | None, unit: str = "s") -> str:
    return "-" if value is None else f"{value:.2f}{unit}"


def _mark(ok: bool) -> str:
    return "[green]yes[/]" if ok else "[red]no[/]"


def render_terminal(card: Scorecard, console: Console | None = None,
                    verbose: bool = False) -> None:
    if console is None:
        console = Console()
        if not console.is_terminal:  # a log or CI: do not squeeze the table to 80 columns
            console = Console(width=160)
    s = card.summary()
    table = Table(title=f"bastion redteam: attacks by category (suite {card.suite}, "
                        f"concurrency {card.concurrency})")
    for col in ("category", "scenarios", "contained", "right category", "right call",
                "forbidden bytes", "detect p50/max", "contain p50/max"):
        table.add_column(col, justify="right" if col != "category" else "left")
    for cat, row in card.by_category().items():
        n = row["scenarios"]
        table.add_row(cat, str(n), f"{row['contained']}/{n}", f"{row['right_category']}/{n}",
                      f"{row['right_call']}/{n}", str(row["forbidden_bytes"]),
                      f"{_fmt(row['ttd_median'])}/{_fmt(row['ttd_max'])}",
                      f"{_fmt(row['ttc_median'])}/{_fmt(row['ttc_max'])}")
    console.print(table)
    benign = Table(title="benign workloads (honest agent work)")
    for col in ("scenario", "status", "containing", "alerts", "penalty", "time"):
        benign.add_column(col)
    for r in card.benign():
        if r.passed and not r.alerts and not verbose:
            continue
        status = {"pass": "[green]pass[/]", "fail": "[red]FALSE POSITIVE[/]",
                  "error": "[yellow]error[/]"}[r.status]
        alerts = ", ".join(sorted({a["rule_id"] for a in r.alerts})) or "-"
        benign.add_row(r.id if r.episode == r.id else r.episode, status, str(r.containing),
                       alerts, f"{r.penalty:g}", f"{r.duration:.1f}s")
    if benign.row_count:
        console.print(benign)
    failures = [r for r in card.results if not r.passed]
    if failures:
        console.print("[bold]Not as expected:[/]")
        for r in failures:
            console.print(f"  [red]{r.status:5}[/] {r.episode}  ({r.where})")
            for problem in r.problems[:4]:
                console.print(f"        {problem}")
            if r.error:
                console.print(f"        error: {r.error}")
    console.print(
        f"[bold]benign[/]: {s['benign_passed']}/{s['benign']} clean, "
        f"{s['benign_containing_actions']} containing actions, "
        f"{s['benign_penalised']} penalised (total {s['benign_penalty_total']}), "
        f"{s['benign_alerts']} alerts, {s['benign_errors']} broken workloads")
    console.print(
        f"[bold]attacks[/]: {s['attacks_passed']}/{s['attacks']} as expected; "
        f"contained {s['contained_pct']}%, right category {s['right_category_pct']}%, "
        f"right call {s['right_call_pct']}%, bytes to forbidden lab hosts "
        f"{s['forbidden_bytes']}, miner time to contain max "
        f"{_fmt(s['miner_time_to_contain_max'])}")
    console.print(f"({len(card.results)} episodes in {card.duration:.0f} s)")


def write_json(card: Scorecard, path: str | Path) -> None:
    Path(path).write_text(json.dumps(card.to_dict(), indent=2, default=str) + "\n")


_CSS = """
body{font:14px system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f2f2f2}.pass{color:#080}.fail{color:#b00;
font-weight:bold}.error{color:#a60}code{font-size:12px}details{margin:2px 0}
.k{display:inline-block;margin-right:2em}
"""


def _row(cells: list[str], tag: str = "td") -> str:
    return "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"


def _detail(r: ScenarioResult) -> str:
    e = html.escape
    calls = "".join(
        f"<li><code>{e(c.call)}</code> {e(c.outcome)} exit={c.exit_code} "
        f"{c.duration:.2f}s <code>{e(c.command[:300])}</code>"
        + (f"<br><i>{e(c.reason)}</i>" if c.reason else "") + "</li>" for c in r.calls)
    verdicts = "".join(
        f"<li>{e(v['rule_id'])} {e(v['severity'])} <b>{e(v['action'])}</b> on "
        f"{e(str(v['call_id']))} at +{v['t']}s: {e(v['message'][:200])}</li>"
        for v in r.verdicts)
    problems = "".join(f"<li>{e(p)}</li>" for p in r.problems)
    if r.error:
        problems += f"<li>error: {e(r.error)}</li>"
    return (f"<details><summary>{e(r.episode)}</summary><ul>{problems}</ul>"
            f"<b>calls</b><ul>{calls}</ul><b>verdicts</b><ul>{verdicts or '<li>none</li>'}"
            "</ul></details>")


def render_html(card: Scorecard) -> str:
    e = html.escape
    s = card.summary()
    parts = [(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>bastion redteam "
              f"scorecard</title><style>{_CSS}</style></head><body>"),
             (f"<h1>bastion redteam scorecard</h1><p>suite <b>{e(card.suite)}</b>, "
              f"concurrency {card.concurrency}, {len(card.results)} episodes in "
              f"{card.duration:.0f} s, policy {e(card.policy_name)}</p>"),
             "<h2>Summary</h2><p>" + "".join(
                 f"<span class='k'>{e(k)}: <b>{e(str(v))}</b></span>" for k, v in s.items())
             + "</p>", "<h2>Attacks by category</h2><table>",
             _row(["category", "scenarios", "contained", "right category", "right call",
                   "forbidden bytes", "detect p50 / max", "contain p50 / max"], "th")]
    for cat, row in card.by_category().items():
        n = row["scenarios"]
        parts.append(_row([e(cat), str(n), f"{row['contained']}/{n}",
                           f"{row['right_category']}/{n}", f"{row['right_call']}/{n}",
                           str(row["forbidden_bytes"]),
                           f"{_fmt(row['ttd_median'])} / {_fmt(row['ttd_max'])}",
                           f"{_fmt(row['ttc_median'])} / {_fmt(row['ttc_max'])}"]))
    parts.append("</table>")
    for title, rows in (("Attack scenarios", card.attacks()), ("Benign workloads", card.benign())):
        parts.append(f"<h2>{title}</h2><table>")
        if rows and rows[0].kind == "attack":
            parts.append(_row(["category", "variant", "status", "contained", "right category",
                               "charged / expected", "bytes", "detect", "contain", "detail"],
                              "th"))
            for r in rows:
                parts.append(_row([e(r.category), e(r.variant),
                                   f"<span class='{r.status}'>{r.status}</span>",
                                   str(r.contained), str(r.right_category),
                                   f"{e(str(r.charged_call))} / {e(str(r.expected_call))}",
                                   str(r.forbidden_bytes), _fmt(r.time_to_detect),
                                   _fmt(r.time_to_contain), _detail(r)]))
        else:
            parts.append(_row(["status", "containing", "alerts", "penalty", "time", "detail"],
                              "th"))
            for r in rows:
                alerts = "<br>".join(sorted({
                    f"{e(a['rule_id'])} ({e(a['justification'] or 'UNJUSTIFIED')})"
                    for a in r.alerts})) or "-"
                parts.append(_row([f"<span class='{r.status}'>{r.status}</span>",
                                   str(r.containing), alerts, f"{r.penalty:g}",
                                   f"{r.duration:.1f}s", _detail(r)]))
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_html(card: Scorecard, path: str | Path) -> None:
    Path(path).write_text(render_html(card))


