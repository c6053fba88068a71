"""The HTML report: self-contained, escaped, and rendered by a real headless Chromium."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from bastion import Event, EventKind
from bastion.audit import AuditTrail
from bastion.audit.html import render_html
from bastion.audit.report import build_report
from bastion.cli import app

from .helpers import RUN, build_log

CHROMIUM = "/usr/bin/chromium"


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120, check=False)


def test_html_report_in_headless_chromium(audit_state: Path, tmp_path: Path) -> None:
    assert shutil.which(CHROMIUM), "chromium is a bootstrap dependency (apt-get install chromium)"
    build_log(audit_state)
    page = tmp_path / "report.html"
    cli = CliRunner().invoke(app, ["report", "ep-0", "--html", str(page), "--state-dir",
                                   str(audit_state)])
    assert cli.exit_code == 0, cli.output
    html = page.read_text()
    assert "<script" not in html and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")  # self-contained, nothing fetched
    png = tmp_path / "shot.png"
    shot = _chromium([f"--screenshot={png}", "--window-size=1280,2000", page.as_uri()],
                     tmp_path / "profile-1")
    assert png.exists(), shot.stderr
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1280, 2000)
    assert len(data) > 30_000  # a blank page compresses to a few kB
    dom = _chromium(["--dump-dom", page.as_uri()], tmp_path / "profile-2").stdout
    assert 'id="timeline"' in dom
    assert dom.count('class="call"') == 4  # one bar per tool call
    assert dom.count('class="verdict"') == 2
    assert dom.count('class="card step"') == 4 and dom.count('class="proctree"') == 4
    assert "xmrig" in dom


def test_attacker_text_is_escaped(audit_state: Path) -> None:
    evil = '<script>alert(1)</script><img src=x onerror=alert(2)>"'
    with AuditTrail(audit_state, RUN) as trail:
        trail.append_event(Event(EventKind.LIFECYCLE, run_id=RUN, episode_id="xss", step=0,
                                 call_id="c0", fields={"life.state": "call_start",
                                                       "cmd.raw": evil}))
        trail.append_event(Event(EventKind.EXEC, run_id=RUN, episode_id="xss", step=0,
                                 call_id="c0", pid=5, ppid=1,
                                 fields={"proc.name": "<b>x</b>", "proc.cmdline": evil}))
    html = render_html(build_report(audit_state, "xss"))
    assert "<script>" not in html and "<img" not in html and "<b>x</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
