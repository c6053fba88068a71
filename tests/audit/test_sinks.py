"""The HTTP checkpoint sink: checkpoints shipped to an endpoint outside the state dir
catch truncation; an unreachable sink fails the append (closed, not silent)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from bastion import Event, EventKind
from bastion.audit import AuditError, AuditTrail, DirectorySink, HttpSink, verify_state_dir

from .helpers import db


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, object]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def endpoint() -> Iterator[tuple[str, list[dict[str, object]], ThreadingHTTPServer]]:
    handler = type("Collector", (_Collector,), {"received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/checkpoints", handler.received, server
    server.shutdown()
    server.server_close()


def _ev(n: int) -> Event:
    return Event(EventKind.EXEC, run_id="h", episode_id="e", step=n, pid=n)


def test_http_sink_detects_truncation(audit_state: Path, tmp_path: Path, endpoint) -> None:
    url, received, _server = endpoint
    sinks = [DirectorySink(audit_state / "checkpoints"), HttpSink(url)]
    with AuditTrail(audit_state, "h", sinks=sinks) as trail:
        for n in range(30):
            trail.append_event(_ev(n))
    assert received[0]["public_key"] == trail.key.public_b64
    # what the remote side kept, laid out as a checkpoint directory
    remote = tmp_path / "remote" / "h"
    remote.mkdir(parents=True)
    (remote / "run.json").write_text(json.dumps({"public_key": received[0]["public_key"]}))
    for item in received[1:]:
        (remote / f"{item['size']:016d}.cp").write_text(str(item["note"]))
    assert verify_state_dir(audit_state, checkpoints=tmp_path / "remote")[0].ok
    # the attacker truncates and wipes the local sink; the remote copy still knows
    conn = db(audit_state, "h")
    conn.execute("DELETE FROM records WHERE seq >= 20")
    conn.execute("DELETE FROM checkpoints WHERE size > 20")
    for note in (audit_state / "checkpoints" / "h").iterdir():
        note.unlink()
    problem = verify_state_dir(audit_state, checkpoints=tmp_path / "remote")[0].problem
    assert problem is not None and (problem.kind, problem.seq) == ("truncated", 20)


def test_unreachable_http_sink_fails_closed(audit_state: Path, endpoint) -> None:
    url, _received, server = endpoint
    trail = AuditTrail(audit_state, "h", sinks=[HttpSink(url, timeout=1.0)])
    trail.append_event(_ev(0))
    server.shutdown()
    server.server_close()
    end = Event(EventKind.LIFECYCLE, run_id="h", episode_id="e",
                fields={"life.state": "terminated"})
    with pytest.raises(AuditError, match="refused the checkpoint"):
        trail.append_event(end)  # the episode-end checkpoint cannot be exported
    with pytest.raises(AuditError):
        trail.append_event(_ev(1))
    trail.close()
