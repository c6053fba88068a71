"""Errors of image resolution. Each one names the image and says what to do.

They are ``SandboxUnavailable``: a session whose image cannot be used cannot start,
and callers that already handle "no sandbox" handle a bad image the same way.
"""

from __future__ import annotations

from ..errors import SandboxUnavailable

__all__ = ["ImageCorrupt", "ImageError", "ImageNotFound", "ImageUnsupported"]


class ImageError(SandboxUnavailable):
    """An image could not be turned into a root filesystem."""


class ImageNotFound(ImageError):
    """No image at the given reference (missing path, missing tag)."""


class ImageCorrupt(ImageError):
    """A blob does not match its digest or size, or a manifest is not valid JSON."""


class ImageUnsupported(ImageError):
    """The image uses a format or media type bastion does not unpack."""
