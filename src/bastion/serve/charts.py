"""Inline SVG charts for the dashboard, rendered on the server (no scripts, no build
step, no external resources). Every label that came from a trail is escaped."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from .models import StepStats

__all__ = ["category_bars", "category_colour", "decision_bars", "step_chart",
           "training_chart"]

_PALETTE = ("#e53935", "#8e24aa", "#3949ab", "#00897b", "#f4511e", "#6d4c41", "#c0ca33",
            "#039be5", "#d81b60", "#5e35b1", "#43a047", "#fb8c00")
_FONT = 'font-family="ui-monospace,Menlo,Consolas,monospace"'


def _t(value: object) -> str:
    return escape(str(value), quote=True)


def category_colour(category: str) -> str:
    digest = hashlib.sha256(category.encode()).digest()
    return _PALETTE[digest[0] % len(_PALETTE)]


def _empty(width: int, height: int, text: str, chart_id: str) -> str:
    return (f'<svg id="{chart_id}" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img">'
            f'<rect width="{width}" height="{height}" fill="#fafbfc" rx="6"/>'
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" font-size="13" '
            f'fill="#889" {_FONT}>{_t(text)}</text></svg>')


def step_chart(stats: Sequence[StepStats], *, width: int = 640, height: int = 240) -> str:
    """Violations per agent step, stacked by category, with the share of the step's
    calls that had a violation drawn as a line (right axis, 0-100 %)."""
    if not stats:
        return _empty(width, height, "no tool calls recorded yet", "step-chart")
    left, right, top, bottom = 40, 46, 16, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(max((sum(s.by_category.values()) for s in stats), default=0), 1)
    slot = plot_w / len(stats)
    bar_w = max(2.0, min(36.0, slot * 0.7))
    parts = [(f'<svg id="step-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="violations per agent step">'),
             f'<rect width="{width}" height="{height}" fill="#fff"/>']
    for i in range(5):  # grid and left axis (counts)
        y = top + plot_h * i / 4
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" '
                     f'stroke="#eceff3"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end" '
                     f'fill="#667" {_FONT}>{peak * (4 - i) / 4:.3g}</text>')
        parts.append(f'<text x="{width - right + 6}" y="{y + 4:.1f}" font-size="10" '
                     f'fill="#b71c1c" {_FONT}>{100 * (4 - i) // 4}%</text>')
    points = []
    label_every = max(1, len(stats) // 16)
    for i, s in enumerate(stats):
        cx = left + slot * (i + 0.5)
        y = top + plot_h
        for category, n in sorted(s.by_category.items()):
            h = plot_h * n / peak
            y -= h
            parts.append(f'<rect class="bar" x="{cx - bar_w / 2:.1f}" y="{y:.1f}" '
                         f'width="{bar_w:.1f}" height="{h:.1f}" '
                         f'fill="{category_colour(category)}"><title>step {s.step}: {n} '
                         f'{_t(category)}</title></rect>')
        points.append(f"{cx:.1f},{top + plot_h * (1 - s.rate):.1f}")
        parts.append(f'<circle cx="{cx:.1f}" cy="{top + plot_h * (1 - s.rate):.1f}" r="3" '
                     f'fill="#b71c1c"><title>step {s.step}: {s.violating_calls}/{s.calls} '
                     f'calls violated ({s.rate:.0%})</title></circle>')
        if i % label_every == 0:
            parts.append(f'<text x="{cx:.1f}" y="{height - bottom + 14}" font-size="10" '
                         f'text-anchor="middle" fill="#667" {_FONT}>{s.step}</text>')
    if len(points) > 1:
        parts.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="#b71c1c" '
                     f'stroke-width="1.5" stroke-dasharray="4 3"/>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 8}" font-size="11" '
                 f'text-anchor="middle" fill="#445" {_FONT}>agent step (bars: violations '
                 f'by category; line: share of calls violating)</text>')
    parts.append("</svg>")
    return "".join(parts)


def category_bars(counts: Mapping[str, int], *, width: int = 420, chart_id: str =
                  "category-chart") -> str:
    """Horizontal bars, largest first."""
    if not counts:
        return _empty(width, 80, "no violations", chart_id)
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:12]
    label_w, row_h = 150, 24
    height = 10 + row_h * len(rows)
    peak = max(n for _, n in rows)
    parts = [(f'<svg id="{chart_id}" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img">')]
    for i, (name, n) in enumerate(rows):
        y = 6 + i * row_h
        w = (width - label_w - 50) * n / peak
        parts.append(f'<text x="{label_w - 8}" y="{y + 15}" font-size="12" text-anchor="end" '
                     f'fill="#1d2330" {_FONT}>{_t(name[:20])}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{max(w, 2):.1f}" height="16" '
                     f'rx="3" fill="{category_colour(name)}"><title>{_t(name)}: {n}</title>'
                     f'</rect><text x="{label_w + w + 6:.1f}" y="{y + 15}" font-size="12" '
                     f'fill="#445" {_FONT}>{n}</text>')
    parts.append("</svg>")
    return "".join(parts)


def decision_bars(counts: Mapping[str, int], *, width: int = 420) -> str:
    """Network decisions (allow / deny), green and red."""
    if not counts:
        return _empty(width, 60, "no network activity", "decision-chart")
    colours = {"allow": "#00897b", "deny": "#e53935"}
    total = sum(counts.values())
    parts = [(f'<svg id="decision-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="56" viewBox="0 0 {width} 56" role="img">')]
    x = 0.0
    for name, n in sorted(counts.items()):
        w = width * n / total
        parts.append(f'<rect x="{x:.1f}" y="4" width="{w:.1f}" height="24" '
                     f'fill="{colours.get(name, "#90a4ae")}"><title>{_t(name)}: {n}</title>'
                     f'</rect>')
        if w > 60:
            parts.append(f'<text x="{x + 6:.1f}" y="21" font-size="12" fill="#fff" {_FONT}>'
                         f'{_t(name)} {n}</text>')
        x += w
    parts.append(f'<text x="0" y="48" font-size="11" fill="#667" {_FONT}>{total} network '
                 f'decisions (connections and DNS answers)</text></svg>')
    return "".join(parts)


def training_chart(steps: Sequence[Mapping[str, Any]], breaker_rate: float | None, *,
                   width: int = 420, height: int = 180) -> str:
    """Share of violating episodes per training step, with the breaker threshold."""
    if not steps:
        return _empty(width, height, "no training steps summarised", "training-chart")
    left, top, bottom = 36, 12, 30
    plot_w, plot_h = width - left - 10, height - top - bottom
    slot = plot_w / len(steps)
    parts = [(f'<svg id="training-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img">')]
    for i in range(5):
        y = top + plot_h * i / 4
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" '
                     f'stroke="#eceff3"/><text x="{left - 4}" y="{y + 4:.1f}" font-size="10" '
                     f'text-anchor="end" fill="#667" {_FONT}>{100 * (4 - i) // 4}%</text>')
    for i, s in enumerate(steps):
        rate = float(s.get("violation_rate") or 0.0)
        h = plot_h * min(rate, 1.0)
        x = left + slot * i + slot * 0.15
        over = breaker_rate is not None and rate > breaker_rate
        parts.append(f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{slot * 0.7:.1f}" '
                     f'height="{max(h, 1):.1f}" fill="{"#c62828" if over else "#ef9a9a"}">'
                     f'<title>training step {_t(s.get("step"))}: '
                     f'{_t(s.get("violating_episodes"))}/{_t(s.get("episodes"))} episodes '
                     f'({rate:.0%})</title></rect><text x="{x + slot * 0.35:.1f}" '
                     f'y="{height - bottom + 14}" font-size="10" text-anchor="middle" '
                     f'fill="#667" {_FONT}>{_t(s.get("step"))}</text>')
    if breaker_rate is not None:
        y = top + plot_h * (1 - min(breaker_rate, 1.0))
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" '
                     f'stroke="#212121" stroke-dasharray="6 4"/><text x="{width - 12}" '
                     f'y="{y - 4:.1f}" font-size="10" text-anchor="end" fill="#212121" {_FONT}>'
                     f'breaker {breaker_rate:.0%}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 4}" font-size="11" '
                 f'text-anchor="middle" fill="#445" {_FONT}>training step</text></svg>')
    return "".join(parts)
