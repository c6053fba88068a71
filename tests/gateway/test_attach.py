"""A session's network attachment: its own namespace and address, attribution by source
address, phases, and nothing left behind on close."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from bastion import Session
from bastion.errors import SandboxUnavailable
from bastion.events import EventKind
from bastion.gateway.server import Attachment, Gateway
from bastion.lab import Lab


def _attachment(session: Session) -> Attachment:
    network = session._network
    assert isinstance(network, Attachment)
    return network


def _host_link_exists(name: str) -> bool:
    with IPRoute() as ipr:
        return bool(ipr.link_lookup(ifname=name))


def test_each_session_has_its_own_namespace_and_nothing_is_left(
        make_session: Callable[..., Session]) -> None:
    a, b = make_session(), make_session()
    na, nb = _attachment(a), _attachment(b)
    assert na.netns_path != nb.netns_path and na.address != nb.address
    assert Path(na.netns_path).exists() and _host_link_exists(na.link.host_if)
    r = a.exec("cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' | sort")
    assert r.stdout.split() == ["eth0", "lo"]
    registry = na.link.slot.registry / Path(na.netns_path).name
    assert registry.exists()
    a.close()
    assert not Path(na.netns_path).exists()
    deadline = time.monotonic() + 10  # the kernel destroys the veth asynchronously
    while _host_link_exists(na.link.host_if) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _host_link_exists(na.link.host_if)
    assert not registry.exists()
    assert na.address not in {x.address for x in Gateway.get().attachments()}
    assert b.exec("true").exit_code == 0  # the other session is untouched


def test_events_are_charged_by_source_address(make_session: Callable[..., Session]) -> None:
    a, b = make_session(), make_session()
    a.exec("curl -sS -m 2 http://203.0.113.200/ -o /dev/null", step=4, call_id="c4")
    b.exec("getent hosts nothing.example; true")
    a_net = [e for e in a.events if e.kind is EventKind.NET_CONNECT]
    assert len(a_net) == 1 and a_net[0].get("net.src_ip") == _attachment(a).address
    assert a_net[0].session_id == a.session_id and a_net[0].run_id == a.run_id
    assert not [e for e in b.events if e.kind is EventKind.NET_CONNECT]
    b_dns = [e for e in b.events if e.kind is EventKind.DNS_QUERY]
    assert b_dns and all(e.get("net.src_ip") == _attachment(b).address for e in b_dns)
    assert not [e for e in a.events if e.kind is EventKind.DNS_QUERY]


def test_default_policy_resolves_nothing_and_forwards_nothing(session: Session) -> None:
    r = session.exec("getent hosts pypi.org; echo rc=$?")
    assert "rc=2" in r.stdout
    queries = [e for e in session.events if e.kind is EventKind.DNS_QUERY]
    assert queries and all(q.get("dns.decision") == "deny" for q in queries)
    assert all(q.get("dns.rcode") == "NXDOMAIN" for q in queries)


def test_phase_switch_and_unknown_phase(session: Session) -> None:
    with pytest.raises(ValueError):
        session.set_network_phase("nope")
    session.set_network_phase("setup")
    assert _attachment(session).phase == "setup"


def test_lab_session_requires_a_running_lab(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_LAB", "bstnolab")
    assert not Lab().is_up()
    before = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    with pytest.raises(SandboxUnavailable, match="not up"):
        Session(state_dir=state_dir, lab=True)
    after = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    # links pre-built by any gateway's pool (other processes' too) come and go meanwhile
    assert {n for n in after - before if not n.startswith("bst-pool-")} == set()


def test_links_are_built_and_removed_repeatedly(make_session: Callable[..., Session]) -> None:
    """Namespace + veth + firewall per session, built and removed ten times in a row
    (its cost is a benchmark figure: benchmarks/bench_gateway.py)."""
    from bastion.gateway.plumbing import SessionLink

    gateway = Gateway.get()
    for i in range(10):
        link = SessionLink(gateway.slot, 900 + i, f"bst-attach-cost-{os.getpid()}-{i}")
        assert Path(link.netns_path).exists()
        assert link.dropped() == []
        link.close()
        assert not Path(link.netns_path).exists()


def test_sessions_cannot_reach_each_other(make_session: Callable[..., Session]) -> None:
    a, b = make_session(), make_session()
    b.exec("nohup python3 -c 'import socket; s = socket.socket(); "
           "s.bind((\"0.0.0.0\", 8000)); s.listen(); s.settimeout(4); "
           "c, _ = s.accept(); open(\"/workspace/hit\", \"w\").close()' "
           ">/dev/null 2>&1 &")
    r = a.exec(f"curl -sSf -m 2 http://{_attachment(b).address}:8000/; echo rc=$?")
    assert "rc=0" not in r.stdout
    connect = [e for e in a.events if e.kind is EventKind.NET_CONNECT][-1]
    assert connect.get("net.rule") == "gateway.link_local"
    time.sleep(0.3)
    assert not (b.workspace / "hit").exists()


def test_leftovers_of_a_dead_gateway_are_removed() -> None:
    """A gateway process that dies without closing leaves its host table, veths and
    namespaces; the next gateway to start removes them."""
    from bastion.gateway.netns import nft
    from bastion.gateway.plumbing import SessionLink, claim_slot, cleanup_stale, host_table

    slot = claim_slot()
    link = SessionLink(slot, 7, f"bst-dead-{os.getpid()}")
    nft().run(host_table(slot, 1, 2))
    slot.release()  # the owner "dies": its lock goes, its resources stay
    assert Path(link.netns_path).exists()
    assert cleanup_stale() >= 1
    assert not Path(link.netns_path).exists()
    assert not list(slot.registry.iterdir())
    assert slot.table not in nft().run("list tables")
    assert not _host_link_exists(link.host_if)
