"""Image USER mapping, concurrent first use, quarantine of an image session."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from bastion import Policy, Session
from bastion.image import ImageCache, sample


@pytest.fixture(scope="module")
def user_layout(image_dir: Path) -> Path:
    """USER dev (uid 1000): /home/dev is dev's, the rest root's."""
    rootfs = sample.busybox_rootfs(image_dir / "user-rootfs")
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                           "dev:x:1000:1000:dev:/home/dev:/bin/sh\n")
    home = rootfs / "home" / "dev"
    home.mkdir(parents=True)
    (home / "notes").write_text("mine\n")
    for path in (home, home / "notes"):
        os.chown(path, 1000, 1000)
    layout = sample.oci_layout(image_dir / "user", "v1", [rootfs])
    sample._run("umoci", "config", "--image", f"{layout}:v1", "--config.user", "dev")
    return layout


def test_image_user_is_mapped_onto_the_session(image_state: Path, user_layout: Path) -> None:
    with Session(None, state_dir=image_state, image=f"{user_layout}:v1") as s:
        r = s.exec("echo $HOME; echo more >> ~/notes && cat ~/notes; "
                   "touch /etc/new 2>/dev/null || echo etc-refused")
        assert r.stdout.split("\n")[:4] == ["/home/dev", "mine", "more", "etc-refused"], r
        assert {c.path for c in s.image_view.changes()} == {"/home/dev/notes"}


def test_concurrent_first_use_unpacks_once(tmp_path: Path, busybox_layout: Path) -> None:
    cache = ImageCache(tmp_path / "images")
    results: list[object] = []

    def resolve() -> None:
        try:
            results.append(ImageCache(tmp_path / "images").resolve(f"{busybox_layout}:v1"))
        except Exception as exc:  # noqa: BLE001 - collected and asserted on
            results.append(exc)

    threads = [threading.Thread(target=resolve) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(not isinstance(r, Exception) for r in results), results
    assert len({r.rootfs for r in results}) == 1  # type: ignore[union-attr]
    assert sum(r.unpack_seconds > 0 for r in results) == 1  # type: ignore[union-attr]
    assert len(cache.entries()) == 1


def test_quarantine_keeps_the_upper_layer(image_state: Path, busybox_layout: Path) -> None:
    policy = Policy.from_dict({"response": {"critical": "quarantine", "high": "quarantine"},
                               "sandbox": {"protected": ["/opt/data"]}})
    s = Session(policy, state_dir=image_state, image=f"{busybox_layout}:v1")
    try:
        s.exec("echo evidence > /opt/dropped.txt")
        r = s.exec("echo 'pass' > /opt/data/f.txt")  # the grader's data: tampering
        assert any(v.action.value == "quarantine" for v in r.verdicts), r
        kept = image_state / "quarantine" / s.session_id / "workspace"
        assert (kept / "opt" / "dropped.txt").read_text() == "evidence\n"
        assert not (kept / "bin").exists()  # the upper layer only, not the image
    finally:
        s.close()
