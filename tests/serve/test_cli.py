"""`bastion serve` and `bastion serve-token` as a user runs them: a real process, TLS
with a certificate made for the test, the printed admin token and dashboard URL."""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .trails import build_two_runs

BASTION = [sys.executable, "-m", "bastion"]


def _certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_over_tls_prints_tokens_and_url(state_dir: Path, tmp_path: Path) -> None:
    build_two_runs(state_dir)
    run_token = subprocess.run([*BASTION, "serve-token", "--run", "run-b", "--state-dir",
                                str(state_dir)], capture_output=True, text=True, check=True,
                               timeout=60).stdout.strip()
    assert run_token.startswith("bst_")
    cert, key = _certificate(tmp_path)
    port = _free_port()
    proc = subprocess.Popen([*BASTION, "serve", "--port", str(port), "--state-dir",
                             str(state_dir), "--tls-cert", str(cert), "--tls-key", str(key)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "BASTION_ADMIN_TOKEN": ""})
    try:
        lines = []
        assert proc.stdout is not None
        while not any(line.startswith("API:") for line in lines):
            line = proc.stdout.readline()
            assert line, "bastion serve exited: " + "".join(lines)
            lines.append(line)
        out = "".join(lines)
        admin = re.search(r"admin token .*: (bst_\S+)", out).group(1)  # type: ignore[union-attr]
        url = re.search(r"dashboard: (\S+)", out).group(1)  # type: ignore[union-attr]
        assert url.startswith(f"https://127.0.0.1:{port}/ui/login?token=bst_")
        with httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), timeout=30) as c:
            deadline = time.monotonic() + 120  # a loaded machine; returns once it answers
            while True:
                try:
                    health = c.get(f"https://127.0.0.1:{port}/healthz")
                    break
                except httpx.ConnectError:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
            assert health.json()["status"] == "ok"
            base = f"https://127.0.0.1:{port}/api/v1"
            assert c.get(f"{base}/runs").status_code == 401
            runs = c.get(f"{base}/runs", headers={"Authorization": f"Bearer {admin}"}).json()
            assert {r["run_id"] for r in runs} == {"run-a", "run-b"}
            mine = c.get(f"{base}/runs", headers={"Authorization": f"Bearer {run_token}"})
            assert [r["run_id"] for r in mine.json()] == ["run-b"]
            login = c.get(url, follow_redirects=False)
            assert login.status_code == 303 and "bastion_token" in login.headers["set-cookie"]
            assert "httponly" in login.headers["set-cookie"].lower()
            assert "secure" in login.headers["set-cookie"].lower()
        # plain HTTP on the TLS port gets nowhere
        with httpx.Client(timeout=5) as c:
            try:
                r = c.get(f"http://127.0.0.1:{port}/api/v1/runs",
                          headers={"Authorization": f"Bearer {admin}"})
                assert r.status_code != 200
            except httpx.HTTPError:
                pass
        assert admin not in (state_dir / "serve" / "tokens.json").read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
