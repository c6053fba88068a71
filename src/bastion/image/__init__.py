"""Task images: an OCI image (layout, ``docker save`` archive, local store) as a
session's root filesystem, through a per-session copy-on-write overlay.

    cache.py    reference -> verified, unpacked tree (skopeo, umoci), content-addressed
    oci.py      OCI layout metadata: manifest choice, digests, media types
    mounts.py   id-mapped lower layer and overlayfs, with the kernel's mount API
    overlay.py  one session's view, and its diff (the upper layer)
    runtime.py  the host Python the supervisor runs with inside an image
"""

from __future__ import annotations

import functools
from pathlib import Path

from .cache import Image, ImageCache, parse_reference
from .errors import ImageCorrupt, ImageError, ImageNotFound, ImageUnsupported
from .oci import ImageConfig
from .overlay import Change, SessionOverlay

__all__ = [
    "Change",
    "Image",
    "ImageCache",
    "ImageConfig",
    "ImageCorrupt",
    "ImageError",
    "ImageNotFound",
    "ImageUnsupported",
    "SessionOverlay",
    "cache_for",
    "parse_reference",
]


@functools.lru_cache(maxsize=16)
def cache_for(state_root: Path) -> ImageCache:
    """The image cache of a state directory (``<state>/images``), one per process."""
    return ImageCache(Path(state_root) / "images")
