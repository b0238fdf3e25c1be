"""Image downloads with content checks: format decoded by content, sha256, width, height.

File names and Content-Type headers lie (some "posters/*.jpg" are PNG or TIFF), so the
format is whatever Pillow decodes from the bytes. An image counts as present only when it
decodes completely (``load()``, not just the header), is of a known raster format and has a
positive size; anything else is recorded with a reason (``image_corrupt``,
``image_format_<X>``, ``http_404``, ``no_image_url``) rather than dropped. A body cut short in
transit is not "corrupt": the HTTP layer sees it (Content-Length) and retries it.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image

from mmiris.crawl.fetcher import OK, RETRY, Counters, Fetcher
from mmiris.http import redact

ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "TIFF", "GIF", "WEBP", "BMP", "MPO"})
DEFINITIVE_STATUSES = frozenset({400, 403, 404, 410, 451})
MAX_PIXELS = 50_000_000


class CorruptImage(ValueError):
    pass


@dataclass(frozen=True)
class ImageInfo:
    sha256: str
    width: int
    height: int
    format: str


@dataclass(frozen=True)
class ImageResult:
    present: bool
    reason: str | None
    data: bytes | None
    info: ImageInfo | None
    source_url: str | None


def inspect_image(data: bytes) -> ImageInfo:
    """Decode fully and describe; raises CorruptImage for anything that is not a sane image."""
    if not data:
        raise CorruptImage("empty body")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                fmt = im.format
                im.verify()  # structure and checksums (PNG CRCs)
            with Image.open(io.BytesIO(data)) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise CorruptImage(f"{im.width}x{im.height} is too large")
                im.load()  # every pixel: catches truncated JPEG data
                width, height = im.size
    except CorruptImage:
        raise
    except (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        raise CorruptImage(f"{type(exc).__name__}: {exc}") from None
    if fmt not in ACCEPTED_FORMATS:
        raise CorruptImage(f"format {fmt}")
    if width <= 0 or height <= 0:
        raise CorruptImage(f"size {width}x{height}")
    return ImageInfo(hashlib.sha256(data).hexdigest(), int(width), int(height), fmt)


def classify_image(status: int, body: bytes) -> str:
    """200 and definitive refusals (404, 410, ...) settle a download; the rest is retried."""
    if status == 200 or status in DEFINITIVE_STATUSES:
        return OK
    return RETRY


def fetch_image(fetcher: Fetcher, url: str | None, counters: Counters) -> ImageResult:
    """Download (or take from the cache) and check one image."""
    if not url or url.strip() in ("", "N/A"):
        return ImageResult(False, "no_image_url", None, None, None)
    url = url.strip()
    source = redact(url)
    got = fetcher.fetch(url, classify=classify_image, counters=counters, what="image", count_quota=False)
    if got.status != 200:
        return ImageResult(False, f"http_{got.status}", None, None, source)
    try:
        info = inspect_image(got.body)
    except CorruptImage as exc:
        reason = "image_corrupt"
        if str(exc).startswith("format "):
            reason = "image_format_" + str(exc).split(" ", 1)[1]
        return ImageResult(False, reason, None, None, source)
    return ImageResult(True, None, got.body, info, source)
