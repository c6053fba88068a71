"""Sessions inside real OCI images (built by the test with umoci; a `docker save`
archive made from it with skopeo), through the full pipeline."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bastion import Policy, Session
from bastion.events import EventKind
from bastion.image import cache_for

SWE_ENV = {"PYTHONDONTWRITEBYTECODE": "1"}


@pytest.fixture
def image_session(image_state: Path) -> Iterator[Callable[..., Session]]:
    made: list[Session] = []

    def make(image: str | Path, policy: dict | None = None) -> Session:
        s = Session(Policy.from_dict(policy) if policy else None, state_dir=image_state,
                    image=str(image))
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def ok(s: Session, cmd: str, **kw: object) -> str:
    r = s.exec(cmd, env=SWE_ENV, **kw)  # type: ignore[arg-type]
    assert r.exit_code == 0, (cmd, r.stdout, r.stderr)
    assert r.verdicts == [], (cmd, r.verdicts)
    return r.stdout


def test_swe_task_in_image(image_session: Callable[..., Session], swe_layout: Path) -> None:
    """Edit /testbed, pip-install a local wheel into the image's venv, run pytest,
    use git on the root-owned repo (and add safe.directory) -- no verdicts; the diff is
    exactly what changed; a second session on the image sees none of it."""
    s = image_session(f"{swe_layout}:task1")
    assert ok(s, "pwd").strip() == "/testbed"  # the image's WORKDIR
    assert ok(s, "git status --short") == ""  # no "dubious ownership"
    r = s.exec("python -m pytest -q -p no:cacheprovider tests", env=SWE_ENV)
    assert r.exit_code == 1 and "1 failed" in r.stdout
    assert r.verdicts == []
    ok(s, "sed -i 's/a - b/a + b/' pkg/__init__.py")
    assert "1 passed" in ok(s, "python -m pytest -q -p no:cacheprovider tests")
    ok(s, "python -m pip install -q --no-index --no-compile /wheels/tinydep-1.0-py3-none-any.whl")
    assert ok(s, "python -c 'import tinydep; print(tinydep.VALUE)'").strip() == "42"
    ok(s, "git config --global --add safe.directory /testbed")
    assert "pkg/__init__.py" in ok(s, "git diff --stat")
    assert ok(s, "cat /testbed/pkg/__init__.py").count("a + b") == 1  # persists across calls
    changed = {c.path for c in s.image_view.changes()
               if not (s.image_view.root / c.path.lstrip("/")).is_dir()}
    site = "/opt/venv/lib/python3.11/site-packages"
    expected = {"/testbed/pkg/__init__.py", "/root/.gitconfig", f"{site}/tinydep.py"}
    assert expected <= changed
    rest = changed - expected - {"/testbed/.git/index"}  # git may refresh its index
    assert rest and all(p.startswith(f"{site}/tinydep-1.0.dist-info/") for p in rest), rest
    assert [v for v in s.verdicts if v.action.value != "none"] == []
    s.close()
    # the episode-end diff went through the pipeline as file.diff events, one per path
    diffs = {e.get("file.path"): e for e in s.events
             if e.kind is EventKind.FILE_DIFF and e.get("file.location") == "image"}
    assert {p for p, e in diffs.items() if e.get("file.size", -1) > 0} >= expected
    assert diffs["/testbed/pkg/__init__.py"].get("file.op") == "write"
    assert diffs["/root/.gitconfig"].get("file.op") == "create"
    assert [v for v in s.verdicts if v.action.value != "none"] == []

    cached = cache_for(s.host.state.root).resolve(f"{swe_layout}:task1").rootfs
    assert "a - b" in (cached / "testbed/pkg/__init__.py").read_text()  # cache untouched
    again = image_session(f"{swe_layout}:task1")
    assert "a - b" in ok(again, "cat pkg/__init__.py")
    r = again.exec("python -c 'import tinydep'", env=SWE_ENV)
    assert r.exit_code == 1 and "ModuleNotFoundError" in r.stderr
    assert ok(again, "ls -A /root") == ""
    assert again.image_view.changes() == []


def test_docker_archive_without_python(image_session: Callable[..., Session],
                                       busybox_archive: Path) -> None:
    """A `docker save` archive of an image with no Python: the supervisor comes from
    the host, `sh -c` calls run with the image's ENV and WORKDIR, layers and whiteouts
    are applied, writes stay in the session."""
    s = image_session(busybox_archive)
    out = ok(s, "pwd; echo $GREETING; cat /opt/data/f.txt; "
                "test -e /etc/motd || echo motd-gone; command -v python3 || echo no-python")
    assert out.split("\n")[:5] == ["/opt", "from-image", "second layer", "motd-gone",
                                  "no-python"]
    ok(s, "echo edit > /opt/data/f.txt && mkdir -p /usr/local/lib/x && echo y > /root/notes.txt")
    assert ok(s, "cat /opt/data/f.txt") == "edit\n"
    assert {c.path for c in s.image_view.changes()} >= {"/opt/data/f.txt", "/root/notes.txt",
                                                         "/usr/local/lib/x"}


def test_layout_session_and_host_isolation(image_session: Callable[..., Session],
                                           busybox_layout: Path) -> None:
    """The image's /root is the image's, not the host's; bastion's state and the host's
    homes are not reachable; the supervisor's runtime is read-only."""
    s = image_session(f"{busybox_layout}:v1")
    host_root = set(os.listdir("/root"))
    seen = set(ok(s, "ls -A /root").split())
    assert not (seen & host_root)
    assert s.exec(f"ls {s.host.state.root}").exit_code != 0
    r = s.exec("cat /proc/1/cmdline | tr '\\0' ' '")
    assert str(s.host.state.root) not in r.stdout
    # last: overwriting the supervisor's interpreter fails (read-only bind), and the
    # rules may also call it tampering and end the session
    r = s.exec("touch /.bastion/usr/bin/python3 /.bastion/new")
    assert r.exit_code != 0
    assert "python3" in (r.stderr + (r.reason or ""))


def test_protected_path_holds_in_image(image_session: Callable[..., Session],
                                       swe_layout: Path) -> None:
    """`protected` paths of the policy are read-only inside the image too (the sandbox
    itself refuses the write, rule packs off), and with the packs on the attempt is
    recorded as reward tampering."""
    sandbox_only = image_session(f"{swe_layout}:task1", {
        "rules": {"packs": []},
        "sandbox": {"protected": ["/testbed/tests"], "workspace": "/testbed"}})
    r = sandbox_only.exec("python -c \"open('/testbed/tests/test_add.py', 'a').write('#')\"",
                          env=SWE_ENV)
    assert r.exit_code != 0 and "Read-only file system" in r.stderr
    r = sandbox_only.exec("echo 'def test_x(): pass' > /testbed/tests/test_add.py")
    assert r.exit_code != 0 and "Read-only file system" in r.stderr
    assert sandbox_only.image_view.changes() == []

    s = image_session(f"{swe_layout}:task1", {"sandbox": {"protected": ["/testbed/tests"],
                                                          "workspace": "/testbed"}})
    s.exec("echo 'def test_x(): pass' > /testbed/tests/test_add.py")
    assert any(v.rule_id.startswith("reward_integrity") for v in s.verdicts)
    assert s.image_view.changes() == []
    text = (s.image_view.root / "testbed/tests/test_add.py").read_text()
    assert "assert add(2, 3) == 5" in text


def test_disk_limit_applies_to_the_upper_layer(image_session: Callable[..., Session],
                                               busybox_layout: Path) -> None:
    """What a session writes into its image is held to `limits.disk`, like /tmp."""
    s = image_session(f"{busybox_layout}:v1", {"sandbox": {"limits": {"disk": "8MiB"}}})
    r = s.exec("dd if=/dev/zero of=/opt/big bs=1M count=20")
    assert r.exit_code != 0 and "No space left" in r.stderr
    ok(s, "rm -f /opt/big && echo fine > /opt/small && cat /opt/small")


def test_renamed_directory_is_complete_in_the_diff(image_session: Callable[..., Session],
                                                   busybox_layout: Path) -> None:
    """A directory of the image renamed by the agent appears in the upper layer with its
    content (no redirect to the lower layer), and the old name as deleted."""
    s = image_session(f"{busybox_layout}:v1")
    ok(s, "mv /opt/data /opt/moved && cat /opt/moved/f.txt")
    changes = {c.path: c.kind for c in s.image_view.changes()}
    assert changes.get("/opt/data") == "deleted"
    assert changes.get("/opt/moved/f.txt") == "added"
    assert (s.image_view.overlay.upper / "opt/moved/f.txt").read_text() == "second layer\n"
