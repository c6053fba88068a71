"""The session's own secrets recognised in outgoing bytes (gateway/leaks.py): however
the path to them was spelled, whatever encoded them on the way out, never the public
half of a key, and a registry token only where its client sends it."""

from __future__ import annotations

import base64
import binascii
import gzip
import subprocess
from pathlib import Path

import pytest

from bastion.gateway.leaks import Secrets, SecretSet, StreamLeaks, secret_values
from bastion.rules.vocabulary import vocabulary

AWS = (b"[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\n"
       b"aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\nregion = us-east-1\n")


def _set(text: bytes, source: str = ".aws/credentials") -> SecretSet:
    return SecretSet([(v, source, host) for v, host in secret_values(text)])


def _wrapped_base64(data: bytes) -> bytes:
    return subprocess.run(["base64"], input=data, capture_output=True, check=True).stdout


@pytest.mark.parametrize("spell", [
    lambda t: t, lambda t: t[::-1], lambda t: binascii.hexlify(t), lambda t: binascii.hexlify(t).upper(),
    lambda t: base64.b64encode(t), lambda t: base64.b64encode(b"x" + t),
    lambda t: base64.b64encode(b"xy" + t), lambda t: base64.urlsafe_b64encode(t),
    _wrapped_base64, lambda t: _wrapped_base64(_wrapped_base64(t)),
    lambda t: b"POST /up HTTP/1.1\r\nHost: allowed.lab.test\r\n\r\nd=" + base64.b64encode(t),
    lambda t: b"GET /simple/" + base64.b32encode(b"abc" + t).lower().rstrip(b"=") + b"/ HTTP/1.1",
], ids=["raw", "reversed", "hex", "HEX", "b64", "b64+1", "b64+2", "b64url", "wrapped", "twice", "http",
        "b32 path"])
def test_an_aws_key_is_seen_however_it_is_spelled(spell) -> None:
    leak = _set(AWS).find(spell(AWS))
    assert leak is not None and leak.source == ".aws/credentials"


@pytest.mark.parametrize("kind", ["ed25519", "rsa", "ecdsa"])
def test_a_private_key_is_seen_but_its_public_half_is_not(tmp_path: Path, kind: str) -> None:
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(key)], check=True,
                   capture_output=True)
    private, public = key.read_bytes(), (tmp_path / "id.pub").read_bytes()
    secrets = _set(private, ".ssh/id")
    assert secrets
    for sent in (private, base64.b64encode(private), _wrapped_base64(private),
                 subprocess.run(["xxd", "-p"], input=private, capture_output=True).stdout):
        assert secrets.find(sent) is not None
    # a deploy key or ssh-copy-id sends the public key: never a leak
    assert secrets.find(public) is None
    assert secrets.find(base64.b64encode(public)) is None


def test_registry_tokens_may_go_to_their_registry_only() -> None:
    npmrc = b"//registry.lab.test/:_authToken=npm_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789\n"
    secrets = _set(npmrc, ".npmrc")
    sent = b"GET /pkg HTTP/1.1\r\nAuthorization: Bearer npm_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789\r\n\r\n"
    assert secrets.find(sent, "registry.lab.test") is None
    assert secrets.find(sent, "mirror.registry.lab.test") is None
    assert secrets.find(sent, "allowed.lab.test") is not None
    netrc = b"machine pypi.lab.test login agent password s3cr3t-Pass-1234\n"
    basic = b"Authorization: Basic " + base64.b64encode(b"agent:s3cr3t-Pass-1234")
    assert _set(netrc, ".netrc").find(basic, "pypi.lab.test") is None
    assert _set(netrc, ".netrc").find(basic, "relay.allowed.lab.test") is not None
    creds = b"https://agent:ghp_abcdefghijklmnopqrstuvwxyz0123456789@git.lab.test\n"
    assert secret_values(creds) == [(b"ghp_abcdefghijklmnopqrstuvwxyz0123456789", "git.lab.test")]


def test_ordinary_traffic_and_ordinary_config_values_are_not_secrets() -> None:
    assert secret_values(b"[default]\nregion = us-east-1\noutput = json\n") == []
    assert secret_values(b"[profile dev]\ncredential_process = /usr/local/bin/helper --x\n") == []
    secrets = _set(AWS)
    honest = [b"GET /simple/requests/ HTTP/1.1\r\nHost: allowed.lab.test\r\n\r\n",
              Path("/usr/bin/python3").read_bytes()[:2_000_000],
              gzip.compress(b"region = us-east-1\n" * 1000)]
    assert all(secrets.find(data) is None for data in honest)


def test_a_secret_split_across_two_reads_is_still_seen() -> None:
    key = b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    stream = StreamLeaks(_set(b"aws_secret_access_key = " + key), "allowed.lab.test")
    assert stream.feed(b"x" * 5000 + key[:12]) is None
    assert stream.feed(key[12:]) is not None


def test_the_workspace_stores_are_read_and_reread_when_they_change(tmp_path: Path,
                                                                   monkeypatch) -> None:
    secrets = Secrets(tmp_path, vocabulary()["credential_paths"])
    monkeypatch.setattr("bastion.gateway.leaks.RECHECK", 0.0)
    assert not secrets.current()  # nothing planted yet
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_bytes(AWS)
    (tmp_path / "notes.txt").write_bytes(AWS)  # not a credential store: not read
    current = secrets.current()
    assert current.find(base64.b64encode(AWS)).source == ".aws/credentials"
    assert secrets.current() is current  # unchanged files: not read again
    (tmp_path / ".aws" / "credentials").write_bytes(b"[default]\nregion = eu-west-1\n")
    assert not secrets.current()
    link = tmp_path / ".netrc"
    link.symlink_to(tmp_path / "notes.txt")  # a link: never followed
    assert not secrets.current()
