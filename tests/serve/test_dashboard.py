"""The dashboard in a real browser: headless Chromium (Debian's, driven by Playwright)
against a real server. The overview shows the run's episodes with their state, the
incident feed shows a verdict written after the page loaded, the breaker panel shows a
tripped breaker, and the episode page renders its timeline and process trees.
Screenshots are kept as artifacts (``BASTION_TEST_ARTIFACTS``, default
``/var/tmp/bastion-test-artifacts/serve``)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bastion import Severity
from bastion.policy.rl import RLPolicy
from bastion.rl.records import EpisodeRecord
from bastion.rl.safety import RunMonitor

from .conftest import Server
from .trails import build_two_runs, open_test_trail, verdict

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                "(it is in the Makefile's APT_PACKAGES)")

ARTIFACTS = Path(os.environ.get("BASTION_TEST_ARTIFACTS",
                                "/var/tmp/bastion-test-artifacts")) / "serve"


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def _summary(state_dir: Path) -> None:
    """A run summary as the trainer's RunMonitor writes it: two training steps, the
    second over the breaker's rate."""
    monitor = RunMonitor(RLPolicy(breaker_rate=0.25, breaker_min_episodes=2), run_id="run-a")
    for step, bad in ((0, 0), (1, 2)):
        for i in range(4):
            record = EpisodeRecord("run-a", f"t{step}-{i}", "s", "h")
            if i < bad:
                record.violations.append({"rule_id": "mining.stratum", "severity": "critical",
                                          "categories": ["mining"]})
            monitor.record(record, training_step=step)
        monitor.end_training_step(step)
    monitor.write_summary(state_dir / "runs" / "run-a.json")


def test_dashboard_live_feed_breaker_and_episode_page(serve_factory: Any, state_dir: Path,
                                                      browser: Any) -> None:
    build_two_runs(state_dir)
    _summary(state_dir)
    server: Server = serve_factory()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # bypass_csp: Playwright evaluates its wait predicates as strings, which the
    # dashboard's Content-Security-Policy (no unsafe-eval) would refuse
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, bypass_csp=True)

    # without logging in, the dashboard is refused
    assert page.goto(f"{server.url}/ui").status == 401
    page.goto(f"{server.url}/ui/login?token={server.reader}")
    assert page.url == f"{server.url}/ui"  # the token left the address bar
    page.wait_for_selector("#feed .item")
    page.wait_for_function("document.getElementById('conn').textContent.includes('live')")
    states = page.eval_on_selector_all("#episodes tr.episode",
                                       "rows => rows.map(r => [r.dataset.episode, "
                                       "r.dataset.state])")
    assert sorted(states) == [["ep-1", "closed"], ["ep-2", "live"], ["ep-9", "closed"]]
    assert page.locator("#feed .item").count() == 5
    assert page.inner_text("#tile-live b") == "1"
    assert page.locator("#step-chart rect.bar").count() >= 3
    assert "TRIPPED" in page.inner_text("#breaker-tripped")
    assert page.locator("#training-chart rect").count() == 2
    assert page.inner_text("#tile-chain b") == "intact"

    # a verdict that happens now appears at the top of the feed
    with open_test_trail(state_dir, "run-a") as trail:
        v = verdict("run-a", "ep-2", "s-2", 5, "persistence.cron", Severity.HIGH,
                    ("persistence",))
        happened = time.monotonic()
        trail.append_verdict(v)
    page.wait_for_selector("#feed .item[data-rule='persistence.cron']", timeout=30_000)
    seen_after = time.monotonic() - happened
    first = page.locator("#feed .item").first
    assert first.get_attribute("data-rule") == "persistence.cron"
    assert "step 5" in first.inner_text() and "call c5" in first.inner_text()
    # the tiles follow within their refresh period
    page.wait_for_function("document.querySelector('#tile-verdicts b').textContent === '6'")
    page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)
    (ARTIFACTS / "feed-latency.txt").write_text(f"{seen_after:.3f} s from append to feed\n")

    # the episode page: state, network decisions, and the report's timeline and trees
    first.locator("a").click()
    page.wait_for_url(f"{server.url}/ui/episodes/ep-2**")
    assert "live" in page.inner_text("#ep-state")
    assert page.locator("#network tr").count() == 1 + 8  # 4 connections + 4 DNS answers
    assert page.locator("#decision-chart rect").count() == 2
    frame = page.frame_locator("#report")
    frame.locator("svg#timeline").wait_for()
    # four calls, plus a lane for call c5 that the new verdict named
    assert frame.locator("svg#timeline rect.call").count() == 5
    assert frame.locator("svg#timeline circle.verdict").count() == 3
    assert frame.locator("svg.proctree").count() == 4
    page.wait_for_function("document.getElementById('report').offsetHeight > 1000")
    page.screenshot(path=str(ARTIFACTS / "episode.png"), full_page=True)
    page.close()


@pytest.mark.needs_root
@pytest.mark.slow
def test_dashboard_follows_a_live_rl_demo_run(serve_factory: Any, state_dir: Path,
                                              browser: Any) -> None:
    """The RL demo (a rogue and an ordinary agent in real sessions, real rule packs)
    runs while the dashboard is open: its episodes show up live, its verdicts arrive on
    the feed through the stream, and at the end the breaker panel shows the run's
    summary."""
    import io
    import threading

    from rich.console import Console

    from bastion.rl.demo import run_training_demo

    server: Server = serve_factory()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, bypass_csp=True)
    page.goto(f"{server.url}/ui/login?token={server.reader}")
    page.wait_for_function("document.getElementById('conn').textContent.includes('live')")
    result: dict[str, Any] = {}
    # The demo prints each verdict from the episode's own thread while its session is
    # open; this console holds that print until the page has shown a live episode and
    # a streamed verdict. So the run cannot end between two refreshes of the page, on
    # however fast a machine (a 4-episode run once did, between two 2 s refreshes).
    seen = threading.Event()

    class HeldAtFirstVerdict(io.StringIO):
        def write(self, text: str) -> int:
            if " -> " in text and "contained" in text:
                seen.wait(timeout=120)
            return super().write(text)

    output = HeldAtFirstVerdict()
    console = Console(file=output, width=200)

    def run() -> None:
        try:
            result["code"] = run_training_demo(console, state_dir=state_dir, episodes=4,
                                               parallel=2)
        except Exception as exc:  # noqa: BLE001 - shown by the assertion below
            result["error"] = repr(exc)

    demo = threading.Thread(target=run)
    demo.start()
    seen_live = seen_new = False
    try:
        while demo.is_alive() and not (seen_live and seen_new):
            seen_live = seen_live or page.locator(
                "#episodes tr.episode[data-state='live']").count() > 0
            seen_new = seen_new or page.locator("#feed .item.new").count() > 0  # by stream
            if seen_live and seen_new:
                # the panels follow the feed within a refresh; picture them caught up
                page.wait_for_function("document.querySelector('#tile-verdicts b')"
                                       ".textContent !== '0'", timeout=30_000)
                page.screenshot(path=str(ARTIFACTS / "rl-demo-live.png"), full_page=True)
            page.wait_for_timeout(100)
    finally:
        seen.set()
        demo.join(timeout=300)
    assert result.get("code") == 0, (result, output.getvalue()[-3000:])
    assert seen_live and seen_new, (seen_live, seen_new)
    page.wait_for_selector(".breaker h3", timeout=30_000)
    page.wait_for_function("[...document.querySelectorAll('#episodes tr.episode')]"
                           ".every(r => r.dataset.state === 'closed')", timeout=30_000)
    verdicts = server.get("/api/v1/verdicts", server.reader, limit=1000).json()
    assert verdicts and {v["run_id"] for v in verdicts} == {page.inner_text(".breaker h3")}
    page.wait_for_function(f"document.querySelectorAll('#feed .item').length === "
                           f"{len(verdicts)}", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "rl-demo-done.png"), full_page=True)
    page.close()
