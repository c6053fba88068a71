"""Fail closed, once for every sensor.

A sensor that dies, or that loses events, must not leave sessions running unobserved:

- ``run_guarded`` runs a sensor's thread; if it raises, the sensor is marked broken
  (no new session may register) and every session it watched is contained (ended,
  with an audit record), then the error propagates if it was not an ``Exception``.
- ``report_loss`` gives every running session a ``telemetry.loss`` event; the engine
  answers it with a freezing verdict, which the session carries out on its own
  executor (the sensor never freezes anything itself).
- ``report_degraded`` says a sensor runs late or partly blind without losing events:
  recorded, judged low, never a penalty (it is the host's load, not the agent).
- ``telemetry`` builds the ``telemetry`` event (loss, or a gap: a sensor that runs
  degraded says so once per session).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from ..contracts import EventSink, SessionState, Watched, make_event
from ..events import Event, EventKind

__all__ = ["Observed", "report_degraded", "report_loss", "run_guarded", "telemetry"]


class Observed(NamedTuple):
    """A session as a sensor holds it: what it may read, where it submits."""

    view: Watched
    sink: EventSink


def telemetry(view: Watched, sensor: str, reason: str, *, loss: bool = False,
              gap: bool = False) -> Event:
    fields: dict[str, Any] = {"telemetry.sensor": sensor, "telemetry.reason": reason}
    if loss:
        fields["telemetry.loss"] = True
    if gap:
        fields["telemetry.gap"] = True
    return make_event(view, EventKind.TELEMETRY, **fields)


def run_guarded(sensor: str, target: Callable[[], None],
                watched: Callable[[], Iterable[Observed]],
                broken: Callable[[str], None]) -> None:
    """Run ``target`` (a sensor's loop); contain every watched session if it fails."""
    try:
        target()
    except BaseException as exc:
        reason = f"{type(exc).__name__}: {exc}"
        broken(reason)
        for observed in list(watched()):
            observed.sink.contain(f"the {sensor} sensor failed ({reason})")
        if not isinstance(exc, Exception):
            raise


def report_loss(sensor: str, reason: str, watched: Iterable[Observed]) -> None:
    """Events were lost: tell every session that still runs (it will be frozen)."""
    for observed in watched:
        if observed.view.state is SessionState.OPEN:
            observed.sink.submit(telemetry(observed.view, sensor, reason, loss=True))


def report_degraded(sensor: str, reason: str, watched: Iterable[Observed]) -> None:
    """Nothing was lost but the sensor runs degraded (late): record it in every open session."""
    for observed in watched:
        if observed.view.state is SessionState.OPEN:
            observed.sink.submit(telemetry(observed.view, sensor, reason, gap=True))
