"""Read an OCI image layout: pick the manifest, check every descriptor against its blob.

This module reads only JSON metadata and hashes blobs; it never opens a layer as a
tar archive (umoci does the unpacking, see ``cache.py``). What it checks is what the
image-spec requires of a consumer: a blob's sha256 and size match its descriptor, and
every media type is one the unpacker understands.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ImageCorrupt, ImageNotFound, ImageUnsupported

__all__ = ["ImageConfig", "LayoutImage", "chain_id", "read_layout", "verify_blob"]

MANIFEST_TYPES = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
}
INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
CONFIG_TYPES = {
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
}
# what umoci 0.4 unpacks; zstd and foreign (non-distributable) layers are refused
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
}
REF_ANNOTATION = "org.opencontainers.image.ref.name"
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


@dataclass(frozen=True)
class ImageConfig:
    """What of the image's config applies to a session's calls."""

    user: str = ""
    workdir: str = ""
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ImageConfig:
        conf = doc.get("config") or {}
        env: dict[str, str] = {}
        for item in conf.get("Env") or []:
            key, sep, value = str(item).partition("=")
            if sep:
                env[key] = value
        return cls(user=str(conf.get("User") or ""), workdir=str(conf.get("WorkingDir") or ""),
                   env=env)

    def to_json(self) -> dict[str, Any]:
        return {"user": self.user, "workdir": self.workdir, "env": self.env}


@dataclass(frozen=True)
class LayoutImage:
    """One image of a layout, verified down to its config (layers: see verify_layers)."""

    layout: Path
    tag: str | None  # the ref name umoci unpacks, None when the manifest is untagged
    manifest_digest: str
    config_digest: str
    config: ImageConfig
    layers: tuple[dict[str, Any], ...]  # descriptors, in order
    diff_ids: tuple[str, ...]

    @property
    def cache_key(self) -> str:
        """Names the unpacked root filesystem. Built from the layer *blob* digests,
        which bastion verifies itself, rather than the config's diff_ids, which an
        image could state falsely to reuse (or poison) another image's cache entry."""
        return chain_id(tuple(str(layer["digest"]) for layer in self.layers))

    def verify_layers(self) -> None:
        for layer in self.layers:
            verify_blob(self.layout, layer)


def chain_id(diff_ids: tuple[str, ...] | list[str]) -> str:
    """The image-spec ChainID construction: one digest for an ordered layer stack."""
    if not diff_ids:
        return "sha256:" + hashlib.sha256(b"").hexdigest()
    current = diff_ids[0]
    for diff in diff_ids[1:]:
        current = "sha256:" + hashlib.sha256(f"{current} {diff}".encode()).hexdigest()
    return current


def _blob_path(layout: Path, digest: str) -> Path:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or not all(c in "0123456789abcdef" for c in hexpart):
        raise ImageUnsupported(f"{layout}: digest {digest!r} is not a sha256 digest")
    return layout / "blobs" / algo / hexpart


def verify_blob(layout: Path, desc: dict[str, Any]) -> Path:
    """Hash a blob and compare digest and size with its descriptor."""
    digest = str(desc.get("digest", ""))
    path = _blob_path(layout, digest)
    h = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
    except FileNotFoundError:
        raise ImageCorrupt(f"{layout}: blob {digest} is missing") from None
    if "sha256:" + h.hexdigest() != digest:
        raise ImageCorrupt(
            f"{layout}: blob {digest} is corrupt (its content hashes to sha256:{h.hexdigest()})"
        )
    if "size" in desc and int(desc["size"]) != size:
        raise ImageCorrupt(f"{layout}: blob {digest} has {size} bytes, its descriptor says "
                           f"{desc['size']}")
    return path


def _read_json_blob(layout: Path, desc: dict[str, Any]) -> dict[str, Any]:
    path = verify_blob(layout, desc)
    try:
        doc = json.loads(path.read_bytes())
    except ValueError as exc:
        raise ImageCorrupt(f"{layout}: blob {desc.get('digest')} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ImageCorrupt(f"{layout}: blob {desc.get('digest')} is not a JSON object")
    return doc


def _pick(layout: Path, manifests: list[dict[str, Any]], tag: str | None) -> dict[str, Any]:
    if tag is not None:
        tagged = [m for m in manifests
                  if (m.get("annotations") or {}).get(REF_ANNOTATION) == tag]
        if not tagged:
            names = sorted({(m.get("annotations") or {}).get(REF_ANNOTATION, "")
                            for m in manifests} - {""})
            raise ImageNotFound(f"{layout}: no image tagged {tag!r} (tags: {names or 'none'})")
        return tagged[0]
    if len(manifests) != 1:
        raise ImageNotFound(f"{layout}: holds {len(manifests)} images; name one with "
                            f"{layout}:<tag>")
    return manifests[0]


def _platform_ok(desc: dict[str, Any]) -> bool:
    plat = desc.get("platform") or {}
    return plat.get("os", "linux") == "linux" and plat.get("architecture", _ARCH) == _ARCH


def read_layout(layout: Path, tag: str | None = None) -> LayoutImage:
    """Resolve ``layout[:tag]`` to one verified single-platform image."""
    if not (layout / "oci-layout").is_file():
        raise ImageNotFound(f"{layout} is not an OCI image layout (no oci-layout file)")
    try:
        index = json.loads((layout / "index.json").read_bytes())
    except FileNotFoundError:
        raise ImageCorrupt(f"{layout}: index.json is missing") from None
    except ValueError as exc:
        raise ImageCorrupt(f"{layout}: index.json is not JSON: {exc}") from None
    desc = _pick(layout, list(index.get("manifests") or []), tag)
    chosen_tag = (desc.get("annotations") or {}).get(REF_ANNOTATION)
    if desc.get("mediaType") in INDEX_TYPES:  # a multi-platform image: take the host's
        nested = _read_json_blob(layout, desc)
        fits = [m for m in nested.get("manifests") or [] if _platform_ok(m)]
        if not fits:
            raise ImageUnsupported(f"{layout}: no manifest for linux/{_ARCH}")
        desc = fits[0]
    if desc.get("mediaType") not in MANIFEST_TYPES:
        raise ImageUnsupported(
            f"{layout}: manifest media type {desc.get('mediaType')!r} is not supported "
            f"(supported: {', '.join(sorted(MANIFEST_TYPES))})"
        )
    manifest = _read_json_blob(layout, desc)
    config_desc = manifest.get("config") or {}
    if config_desc.get("mediaType") not in CONFIG_TYPES:
        raise ImageUnsupported(
            f"{layout}: config media type {config_desc.get('mediaType')!r} is not an image "
            "config (an artifact, not a container image?)"
        )
    config = _read_json_blob(layout, config_desc)
    layers = tuple(manifest.get("layers") or [])
    for layer in layers:
        if layer.get("mediaType") not in LAYER_TYPES:
            raise ImageUnsupported(
                f"{layout}: layer {layer.get('digest')} has media type "
                f"{layer.get('mediaType')!r}; bastion unpacks "
                f"{', '.join(sorted(LAYER_TYPES))}"
            )
    diff_ids = tuple(str(d) for d in (config.get("rootfs") or {}).get("diff_ids") or [])
    if len(diff_ids) != len(layers):
        raise ImageCorrupt(f"{layout}: config lists {len(diff_ids)} diff_ids for "
                           f"{len(layers)} layers")
    if (config.get("os") or "linux") != "linux":
        raise ImageUnsupported(f"{layout}: image is for os {config.get('os')!r}, not linux")
    return LayoutImage(
        layout=layout,
        tag=chosen_tag,
        manifest_digest=str(desc["digest"]),
        config_digest=str(config_desc["digest"]),
        config=ImageConfig.from_json(config),
        layers=layers,
        diff_ids=diff_ids,
    )


def layout_stamp(layout: Path) -> str:
    """Changes whenever index.json is rewritten (a retag, a new image)."""
    st = os.stat(layout / "index.json")
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
