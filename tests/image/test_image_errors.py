"""Missing, corrupt and unsupported images: one clear error each, nothing half-written
left in the cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bastion.image import ImageCache, ImageCorrupt, ImageNotFound, ImageUnsupported
from bastion.image.oci import read_layout


def _copy(layout: Path, dest: Path) -> Path:
    shutil.copytree(layout, dest)
    return dest


def _layer_blob(layout: Path, tag: str) -> Path:
    image = read_layout(layout, tag)
    return layout / "blobs" / "sha256" / image.layers[0]["digest"].split(":", 1)[1]


def _assert_cache_clean(cache: ImageCache) -> None:
    assert cache.entries() == []
    assert [p.name for p in (cache.root / "rootfs").iterdir()] == []  # no .partial-*


def test_missing_image(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "images")
    with pytest.raises(ImageNotFound, match="does not pull from registries"):
        cache.resolve(tmp_path / "nope")
    with pytest.raises(ImageNotFound, match="no image tagged 'v9'"):
        pass_layout = tmp_path / "empty"
        pass_layout.mkdir()
        (pass_layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        (pass_layout / "index.json").write_text('{"schemaVersion":2,"manifests":[]}')
        cache.resolve(f"{pass_layout}:v9")
    _assert_cache_clean(cache)


def test_corrupt_layer_is_refused_before_unpacking(tmp_path: Path, busybox_layout: Path) -> None:
    layout = _copy(busybox_layout, tmp_path / "corrupt")
    blob = _layer_blob(layout, "v1")
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the layer
    blob.write_bytes(bytes(data))
    cache = ImageCache(tmp_path / "images")
    with pytest.raises(ImageCorrupt, match=f"blob sha256:{blob.name} is corrupt"):
        cache.resolve(f"{layout}:v1")
    _assert_cache_clean(cache)


def test_truncated_manifest(tmp_path: Path, busybox_layout: Path) -> None:
    layout = _copy(busybox_layout, tmp_path / "trunc")
    index = json.loads((layout / "index.json").read_text())
    digest = next(m for m in index["manifests"]
                  if m["annotations"]["org.opencontainers.image.ref.name"] == "v1")["digest"]
    (layout / "blobs" / "sha256" / digest.split(":")[1]).write_text("{")
    with pytest.raises(ImageCorrupt, match="corrupt"):
        ImageCache(tmp_path / "images").resolve(f"{layout}:v1")


def test_unsupported_layer_media_type(tmp_path: Path, busybox_layout: Path) -> None:
    """A manifest naming a layer type umoci cannot apply (zstd) is refused by name,
    with a valid digest chain (the manifest is re-hashed and re-indexed)."""
    import hashlib

    layout = _copy(busybox_layout, tmp_path / "zstd")
    index = json.loads((layout / "index.json").read_text())
    entry = next(m for m in index["manifests"]
                 if m["annotations"]["org.opencontainers.image.ref.name"] == "v1")
    blobs = layout / "blobs" / "sha256"
    manifest = json.loads((blobs / entry["digest"].split(":")[1]).read_text())
    manifest["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd"
    raw = json.dumps(manifest).encode()
    digest = hashlib.sha256(raw).hexdigest()
    (blobs / digest).write_bytes(raw)
    entry["digest"], entry["size"] = f"sha256:{digest}", len(raw)
    (layout / "index.json").write_text(json.dumps(index))
    cache = ImageCache(tmp_path / "images")
    with pytest.raises(ImageUnsupported, match=r"tar\+zstd"):
        cache.resolve(f"{layout}:v1")
    _assert_cache_clean(cache)


def test_not_an_image_archive(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.tar"
    bogus.write_bytes(b"not a tar at all" * 100)
    cache = ImageCache(tmp_path / "images")
    with pytest.raises(ImageUnsupported, match="is not an image bastion can read"):
        cache.resolve(bogus)
    assert [p.name for p in (cache.root / "imports").iterdir()] == []
    _assert_cache_clean(cache)


def test_unpacked_once_per_layer_stack(tmp_path: Path, busybox_layout: Path,
                                       busybox_archive: Path) -> None:
    """The same layers from a layout and from a `docker save` archive share one entry."""
    cache = ImageCache(tmp_path / "images")
    first = cache.resolve(f"{busybox_layout}:v1")
    assert first.unpack_seconds > 0
    again = cache.resolve(f"{busybox_layout}:v1")
    assert again.unpack_seconds == 0 and again.rootfs == first.rootfs
    assert (first.rootfs / "opt" / "data" / "f.txt").read_text() == "second layer\n"
    assert not (first.rootfs / "etc" / "motd").exists()  # the top layer's whiteout applied
    archived = cache.resolve(busybox_archive)
    assert archived.config.workdir == "/opt"
    assert (archived.rootfs / "bin" / "busybox").is_file()
    assert len(cache.entries()) in (1, 2)  # skopeo may recompress: same or new key
    fresh = ImageCache(tmp_path / "images")  # another process: the ref files are reused
    assert fresh.resolve(f"{busybox_layout}:v1").unpack_seconds == 0


def test_protected_path_through_an_image_symlink_is_refused(
        tmp_path: Path, busybox_layout: Path) -> None:
    """bwrap resolves a bind's source on the host: a protected path that is a symlink in
    the image (here to the host's /etc) must not turn into a bind of a host path."""
    from bastion.image import sample
    from bastion.image.view import open_view

    trap = tmp_path / "trap"
    (trap / "testbed").mkdir(parents=True)
    (trap / "testbed" / "tests").symlink_to("/etc")
    layout = tmp_path / "trapped"
    import shutil

    shutil.copytree(busybox_layout, layout)
    sample._run("umoci", "insert", "--image", f"{layout}:v1", trap, "/")
    with pytest.raises(ImageUnsupported, match="goes through a symlink"):
        open_view(f"{layout}:v1", state_root=tmp_path / "state", session_dir=tmp_path,
                  host_uid=2_999_999, protected=["/testbed/tests"])
    with pytest.raises(ImageUnsupported, match="hidden path /testbed/tests/x goes through"):
        open_view(f"{layout}:v1", state_root=tmp_path / "state", session_dir=tmp_path,
                  host_uid=2_999_999, hidden=["/testbed/tests/x"])


def test_image_with_bastion_runtime_path_is_refused(tmp_path: Path, busybox_layout: Path) -> None:
    """/.bastion is where the supervisor's runtime is bound; an image may not bring one."""
    import shutil

    from bastion.image import sample
    from bastion.image.view import open_view

    extra = tmp_path / "extra"
    (extra / ".bastion" / "usr").mkdir(parents=True)
    layout = tmp_path / "squatter"
    shutil.copytree(busybox_layout, layout)
    sample._run("umoci", "insert", "--image", f"{layout}:v1", extra, "/")
    with pytest.raises(ImageUnsupported, match="supervisor's runtime"):
        open_view(f"{layout}:v1", state_root=tmp_path / "state", session_dir=tmp_path,
                  host_uid=2_999_998)


def test_prune_skips_entries_in_use(tmp_path: Path, busybox_layout: Path) -> None:
    from bastion.image.view import open_view

    cache = ImageCache(tmp_path / "state" / "images")
    image = cache.resolve(f"{busybox_layout}:v1")
    session_dir = tmp_path / "s1"
    session_dir.mkdir()
    view = open_view(f"{busybox_layout}:v1", state_root=tmp_path / "state",
                     session_dir=session_dir, host_uid=2_999_997)
    try:
        assert cache.prune() == []  # mounted by a session: kept
        assert image.rootfs.is_dir()
    finally:
        view.close()
    assert cache.prune() == [image.key]
    assert cache.entries() == [] and not image.rootfs.exists()
    assert list((cache.root / "rootfs").iterdir()) == []
    again = cache.resolve(f"{busybox_layout}:v1")  # unpacked afresh on next use
    assert again.rootfs.is_dir() and again.unpack_seconds > 0


def test_remote_registries_are_refused(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "images")
    with pytest.raises(ImageUnsupported, match="local registries only"):
        cache.resolve("docker://registry.example.com/team/task:1")
    _assert_cache_clean(cache)
