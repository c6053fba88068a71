"""A real ``bastion serve`` (uvicorn) on 127.0.0.1, on an ephemeral port, in a thread
of the test process, over a test state directory."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sse_starlette.sse import AppStatus

from bastion.serve import ServeConfig, TokenStore, create_app
from bastion.serve.actions import SessionControl
from bastion.state import StateDir


@dataclass
class Server:
    url: str
    state_dir: Path
    app: Any
    admin: str
    reader: str  # all runs
    tokens: TokenStore
    _client: httpx.Client | None = None

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def get(self, path: str, token: str | None = None, **params: Any) -> httpx.Response:
        return self._pool.get(path, params=params, headers=self._auth(token))

    def post(self, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        return self._pool.post(path, headers=self._auth(token), **kwargs)

    @staticmethod
    def _auth(token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"} if token else {}

    @property
    def _pool(self) -> httpx.Client:
        # one client for the test (creating one builds an SSL context: ~tens of ms)
        if self._client is None:
            self._client = httpx.Client(base_url=self.url, timeout=30)
        return self._client

    def run_token(self, run: str) -> str:
        return self.tokens.mint(run=run)


def start_server(state_dir: Path, *, control: SessionControl | None = None,
                 **config: Any) -> tuple[Server, Callable[[], None]]:
    app = create_app(ServeConfig(state_dir=state_dir, verify_interval=config.pop(
        "verify_interval", 3600.0), **config), control=control)
    tokens = TokenStore.for_state_dir(StateDir.resolve(state_dir))
    admin = tokens.mint(admin=True, name="test-admin")
    reader = tokens.mint(name="test-reader")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           lifespan="on", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60  # a bound for a loaded machine; returns once started
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("bastion serve did not start")
        time.sleep(0.02)

    result = Server(f"http://127.0.0.1:{port}", state_dir, app, admin, reader, tokens)

    def stop() -> None:
        if result._client is not None:
            result._client.close()
        # what uvicorn does on SIGINT; sse-starlette hooks it to end open streams, through
        # a process-wide flag that nothing resets (one server per process is its model):
        # reset it, or every later server of this test process ends its streams at once
        server.handle_exit(signal.SIGINT, None)
        thread.join(timeout=15)
        sock.close()
        AppStatus.should_exit = False

    return result, stop


@pytest.fixture
def serve_factory(state_dir: Path) -> Iterator[Callable[..., Server]]:
    stops: list[Callable[[], None]] = []

    def make(**kwargs: Any) -> Server:
        server, stop = start_server(state_dir, **kwargs)
        stops.append(stop)
        return server

    yield make
    for stop in stops:
        stop()
