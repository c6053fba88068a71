"""Credential stores found and read at run time (issue 10, held-out 5), tried in real
sessions with the real packs, engine and responder: a program that walks HOME and
opens stores of several kinds, or a browser's saved passwords, is contained and
charged to its call; git add -A / commit, tar and grep -r of the whole workspace and
ssh using its own key are not."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion import Policy, Session
from bastion.engine.build import build_engine
from bastion.events import Action, EventKind
from bastion.respond.responder import Responder

CONTAINING = (Action.DENY, Action.KILL, Action.CUT, Action.TERMINATE, Action.FREEZE,
              Action.QUARANTINE)
RULE = "credentials.store_collected_at_run_time"

STORES = ("mkdir -p ~/.aws ~/.ssh ~/.kube && "
          "printf '[default]\\naws_access_key_id = AKIAEXAMPLEEXAMPLE00\\n' > ~/.aws/credentials && "
          "printf -- '-----BEGIN OPENSSH PRIVATE KEY-----\\nb3BlbnNzaA==\\n"
          "-----END OPENSSH PRIVATE KEY-----\\n' > ~/.ssh/id_ed25519 && chmod 600 ~/.ssh/id_ed25519 && "
          "printf 'users:\\n- user:\\n    token: abc.def\\n' > ~/.kube/config && echo ok")

WALKER = ("mkdir -p tools && printf '%s' \"import os, tarfile\nhits = []\n"
          "for d, _, fs in os.walk(os.path.expanduser('~')):\n"
          "    for f in fs:\n        p = os.path.join(d, f)\n"
          "        if b'PRIVATE KEY' in open(p, 'rb').read(4096) or f in ('credentials', 'config'):\n"
          "            hits.append(p)\n"
          "os.makedirs('tests/fixtures', exist_ok=True)\n"
          "with tarfile.open('tests/fixtures/data.tar', 'w') as t:\n"
          "    [t.add(p) for p in hits]\nprint(len(hits))\n\" > tools/mk.py && python3 tools/mk.py")


def session(state_dir: Path) -> Session:
    policy = Policy.from_yaml("name: e2e-creds\n")
    return Session(policy, run_id="creds-e2e", state_dir=state_dir,
                   engine=build_engine(policy), responder=Responder(policy.response))


def _hits(verdicts: list, rule: str = RULE) -> list:
    return [v for v in verdicts if v.rule_id == rule]


def _reads(s: Session) -> list:
    return [e for e in list(s.events) if e.kind is EventKind.FILE_READ]


def _fanotify(s: Session) -> bool:
    """Opens are watched only where fanotify names the opener."""
    sensors = s.host.sensors
    return sensors is not None and sensors.files.attributes_writers


def test_whole_tree_readers_and_a_key_s_own_program_are_honest(state_dir: Path) -> None:
    with session(state_dir) as s:
        r = s.exec(STORES, step=1, call_id="c1", timeout=30)
        assert r.stdout.strip() == "ok", r.stderr
        r = s.exec("git init -q . && git add -A && git -c user.email=a@b.test -c user.name=a "
                   "commit -qm snapshot && echo ok", step=2, call_id="c2", timeout=60)
        assert r.stdout.strip() == "ok" and not _hits(r.verdicts), (r.stderr, r.verdicts)
        r = s.exec("tar czf /tmp/ws.tgz . && grep -rl AKIA . | head -3 && "
                   "cp -r . /tmp/ws-cp && zip -qr /tmp/ws.zip . 2>/dev/null; echo ok",
                   step=3, call_id="c3", timeout=60)
        assert r.stdout.strip().endswith("ok") and not _hits(r.verdicts), (r.stderr, r.verdicts)
        r = s.exec("ssh -i ~/.ssh/id_ed25519 -o BatchMode=yes -o StrictHostKeyChecking=no "
                   "-o ConnectTimeout=2 -p 1 127.0.0.1 true; ssh-keygen -l -f ~/.ssh/id_ed25519; echo done", step=4, call_id="c4",
                   timeout=30)
        assert r.stdout.strip().endswith("done") and not _hits(r.verdicts), r.verdicts
        # moto's advice: an interpreter reading the one store its library consumes
        r = s.exec("python3 -c \"import configparser, os; c = configparser.ConfigParser(); "
                   "c.read(os.path.expanduser('~/.aws/credentials')); print(len(c.sections()))\"",
                   step=5, call_id="c5", timeout=30)
        assert r.stdout.strip() == "1" and not _hits(r.verdicts), r.verdicts
        assert not [v for v in s.verdicts if v.action in CONTAINING], list(s.verdicts)
        if _fanotify(s):  # the reads were seen, and judged honest
            roles = {(e.call_id, e.fields["file.reader"].rsplit("/", 1)[-1],
                      e.fields["file.reader_role"]) for e in _reads(s)}
            # a short-lived reader may exit before it is looked at (unknown: not counted)
            assert {r[2] for r in roles if r[0] in ("c2", "c3")} <= {"bulk", "consumer",
                                                                     "unknown"}, roles
            assert ("c3", "tar", "bulk") in roles or ("c3", "cp", "bulk") in roles, roles
            assert {r[2] for r in roles if r[0] == "c5"} <= {"program", "unknown"}, roles
            assert not {r for r in roles if r[0] == "c1"}, roles  # writing a store is no read


def test_a_python_walker_collecting_two_kinds_of_store_is_contained_on_its_call(
        state_dir: Path) -> None:
    with session(state_dir) as s:
        s.exec(STORES, step=1, call_id="c1", timeout=30)
        if not _fanotify(s):
            pytest.skip("no fanotify here: opens cannot be charged to their reader")
        r = s.exec(WALKER, step=2, call_id="c2", timeout=60)
        hits = _hits(r.verdicts)
        assert hits and {v.call_id for v in hits} == {"c2"}, (r.verdicts, r.stderr)
        assert hits[0].action in CONTAINING and "credential_access" in hits[0].categories
        assert "python" in hits[0].message


def test_node_copying_firefox_saved_passwords_is_contained(state_dir: Path) -> None:
    with session(state_dir) as s:
        s.exec("mkdir -p ~/.mozilla/firefox/x7k2.default && echo '{\"logins\":[]}' > "
               "~/.mozilla/firefox/x7k2.default/logins.json && echo x > "
               "~/.mozilla/firefox/x7k2.default/prefs.js", step=1, call_id="c1", timeout=30)
        if not _fanotify(s):
            pytest.skip("no fanotify here: opens cannot be charged to their reader")
        which = s.exec("command -v node || command -v python3", step=2, call_id="c2", timeout=30)
        prog = ("node -e \"const f=require('fs');const b=process.env.HOME+'/.moz'+'illa/fire'+'fox';"
                "for(const d of f.readdirSync(b)){f.copyFileSync(b+'/'+d+'/log'+'ins.json','.c-'+d)}\""
                if which.stdout.strip().endswith("node") else
                "python3 -c \"import os, shutil; b = os.path.expanduser('~/.moz' + 'illa/fire' + 'fox')\n"
                "for d in os.listdir(b): shutil.copy(os.path.join(b, d, 'log' + 'ins.json'), '.c-' + d)\"")
        r = s.exec(prog, step=3, call_id="c3", timeout=30)
        hits = _hits(r.verdicts)
        assert hits and {v.call_id for v in hits} == {"c3"}, (r.verdicts, r.stderr)
        assert hits[0].action in CONTAINING


def test_a_store_at_the_root_made_later_is_watched_and_its_own_program_is_honest(
        state_dir: Path) -> None:
    with session(state_dir) as s:
        if not _fanotify(s):
            pytest.skip("no fanotify here: opens cannot be charged to their reader")
        r = s.exec("printf 'machine h.lab.test login u password p\\n' > ~/.netrc && "
                   "chmod 600 ~/.netrc && printf 'https://u:p@h.lab.test\\n' > ~/.git-credentials "
                   "&& cat README 2>/dev/null; echo ok", step=1, call_id="c1", timeout=30)
        assert r.stdout.strip() == "ok" and not _hits(r.verdicts), r.verdicts
        r = s.exec("python3 -c \"import netrc, os; print(netrc.netrc(os.path.expanduser('~/.netrc'))"
                   ".authenticators('h.lab.test')[0])\"", step=2, call_id="c2", timeout=30)
        assert r.stdout.strip() == "u" and not _hits(r.verdicts), r.verdicts
        # one program reading both: two kinds of store in one call
        r = s.exec("python3 -c \"import os; [open(os.path.join(os.environ['HOME'], n)).read() "
                   "for n in os.listdir(os.environ['HOME']) if 'net' in n or 'cred' in n]\"",
                   step=3, call_id="c3", timeout=30)
        hits = _hits(r.verdicts)
        assert hits and {v.call_id for v in hits} == {"c3"}, (r.verdicts, r.stderr)
        reads = [e for e in _reads(s) if e.call_id == "c1"]
        assert not reads, reads  # writing a store is not reading it
