"""Which credential store a path is, and what an opener is to it (sensors/credstores.py)."""

from __future__ import annotations

from bastion.sensors.credstores import role, store_kind, watch_dir


def test_store_kinds_by_path_relative_to_home():
    assert store_kind(".ssh/id_ed25519") == "ssh"
    assert store_kind(".ssh/id_ed25519.pub") is None
    assert store_kind(".ssh/known_hosts") is None
    assert store_kind(".aws/credentials") == store_kind(".aws/config") == "aws"
    assert store_kind(".kube/config") == "kube"
    assert store_kind(".config/gcloud/application_default_credentials.json") == "gcloud"
    assert store_kind(".mozilla/firefox/x7k2.default-release/logins.json") == "browser"
    assert store_kind(".mozilla/firefox/x7k2.default-release/prefs.js") is None
    assert store_kind(".netrc") == "netrc" and store_kind(".git-credentials") == "git-credentials"
    assert store_kind("tests/fixtures/aws_credentials") is None
    assert store_kind("src/.netrc.example") is None
    assert watch_dir(".ssh") and watch_dir(".mozilla/firefox/abc.default")
    assert not watch_dir("src") and not watch_dir(".mozilla")


def test_roles_by_executable_never_by_name():
    assert role("/usr/bin/ssh", "ssh") == "consumer"
    assert role("/usr/bin/ssh-keygen", "ssh") == "consumer"
    assert role("/usr/lib/git-core/git-credential-store", "git-credentials") == "consumer"
    assert role("/usr/bin/git", "git-credentials") == "consumer"
    assert role("/usr/bin/kubectl", "kube") == "consumer"
    assert role("/usr/bin/git", "aws") == "bulk"
    assert role("/usr/bin/tar", "ssh") == "bulk"
    assert role("/bin/grep", "kube") == "bulk"
    assert role("/usr/bin/python3.11", "aws") == "program"
    assert role("/usr/bin/node", "browser") == "program"
    assert role("/usr/bin/cat", "ssh") == "program"
    # a copy of anything in the workspace is the agent's own program, whatever its name
    assert role("/workspace/.cache/ssh", "ssh") == "program"
    assert role("/workspace/bin/tar", "ssh") == "program"
    assert role(None, "ssh") == "unknown"


def test_an_installed_script_is_what_its_interpreter_runs_an_agent_script_is_not():
    assert role("/usr/bin/python3.11", "pypirc", "/usr/local/bin/twine") == "consumer"
    assert role("/usr/bin/python3.11", "aws", "/usr/bin/aws") == "consumer"
    assert role("/usr/bin/node", "npmrc", "/usr/lib/node_modules/npm/bin/npm-cli.js") == "consumer"
    assert role("/usr/bin/python3.11", "ssh", "/workspace/tools/ssh") == "program"
    assert role("/usr/bin/python3.11", "ssh", "/usr/bin/../../workspace/ssh") == "program"
    assert role("/usr/bin/python3.11", "ssh", None) == "program"
    assert role("/usr/bin/bash", "ssh", "/usr/bin/ssh") == "program"  # only interpreters
