"""Robust image decoding: every file becomes an 8-bit RGB image or a named reject.

The build stores what ``load_rgb`` returns and lists every ``RejectedImage``
with its ``reason`` in the manifest, so stored + rejected = found. Choices:

- Truncated or corrupt files are rejected. The image is fully decoded here
  (``load()``), and Pillow's ``LOAD_TRUNCATED_IMAGES`` gray-fill is refused.
- Pillow's decompression-bomb guard stays on: anything above
  ``Image.MAX_IMAGE_PIXELS`` is rejected (Pillow itself only warns between 1x
  and 2x the limit; we reject there too, so the rule is one number).
- A memory budget bounds what one decode may take, below the bomb limit: an
  image of more than ``max_decoded_pixels()`` pixels (default 40 M, about
  120 MB as RGB and a few times that while Pillow decodes; set
  ``LATENTSTORE_MAX_IMAGE_PIXELS`` to change it) is rejected from its header,
  before any pixel is decoded. A 28 kB PNG of 9000x9000 would otherwise take
  1.3 GB in every decoding process.
- EXIF orientation is applied, so pixels are in display orientation.
- Transparency (RGBA, LA, PA, palette with a transparent index) is
  composited on WHITE (255, 255, 255): the page colour a person saw the image
  on, and free of the arbitrary colours hidden under alpha=0 pixels that a
  plain ``convert("RGB")`` would expose.
- 16-bit grayscale (I;16*, and I with values taken as 0..65535) is scaled to
  8 bits with rounding (65535 -> 255, 32768 -> 128), never saturated.
  16-bit RGB PNGs are already reduced to 8 bits by Pillow's decoder.
- CMYK goes through Pillow's conversion (no ICC colour management).
- Tiny images (even 1x1) are returned; the augmentation handles them.
"""
from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..errors import InputError

BACKGROUND = (255, 255, 255)
DEFAULT_MAX_PIXELS = 40_000_000

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}


class RejectedImage(InputError):
    """A file that cannot become a correct RGB image; ``.reason`` is a short, listable cause."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def max_decoded_pixels() -> int:
    """The per-image pixel budget: $LATENTSTORE_MAX_IMAGE_PIXELS, else DEFAULT_MAX_PIXELS."""
    value = os.environ.get("LATENTSTORE_MAX_IMAGE_PIXELS", "")
    try:
        return int(value) if value else DEFAULT_MAX_PIXELS
    except ValueError:
        raise InputError(f"LATENTSTORE_MAX_IMAGE_PIXELS={value!r} is not a whole number of pixels") from None


def special_file(path) -> str | None:
    """Why `path` cannot be an image file without opening it (a FIFO would block the open, a device or a link
    to /dev/zero never ends), or None for a regular file."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    if stat.S_ISREG(mode):
        return None
    kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a folder" if stat.S_ISDIR(mode) else "a special file")
    return f"not a regular file ({kind}{', through a link' if os.path.islink(path) else ''}): not read"


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode ``path`` fully into an 8-bit "RGB" image, or raise ``RejectedImage``."""
    path = Path(path)
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Process-wide switch set by some other code: it would turn a cut JPEG
        # into a silently gray-filled sample. Refuse rather than flip it back.
        raise InputError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True in this process; "
                         "latentstore rejects truncated images instead. Unset it and rerun.")
    special = special_file(path)
    if special:
        raise RejectedImage(path, special)
    size = path.stat().st_size
    if size == 0:
        raise RejectedImage(path, "empty file")
    limit = Image.MAX_IMAGE_PIXELS
    budget = max_decoded_pixels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if limit and im.size[0] * im.size[1] > limit:
                    raise Image.DecompressionBombError(f"{im.size[0] * im.size[1]} pixels")
                if im.size[0] * im.size[1] > budget:
                    raise RejectedImage(path, f"{im.size[0]}x{im.size[1]} is over the memory budget of {budget} "
                                              "pixels per image (set LATENTSTORE_MAX_IMAGE_PIXELS to raise it)")
                im.load()
                im = ImageOps.exif_transpose(im)
                return _to_rgb(im, path)
    except RejectedImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise RejectedImage(path, f"decompression bomb ({_pixels(e)} > limit {limit} pixels)") from e
    except UnidentifiedImageError as e:
        raise RejectedImage(path, "not an image") from e
    except (OSError, SyntaxError, ValueError, IndexError, TypeError, EOFError) as e:
        # Pillow signals decoder failures with a mix of these types.
        msg = str(e)
        if "truncated" in msg.lower() or isinstance(e, EOFError):
            raise RejectedImage(path, "truncated file") from e
        raise RejectedImage(path, f"corrupt image ({type(e).__name__}: {msg[:120]})") from e


def _pixels(e: Exception) -> str:
    """The pixel count from a bomb error/warning message, else '?'."""
    for word in str(e).replace("(", " ").split():
        if word.isdigit():
            return word
    return "?"


def _to_rgb(im: Image.Image, path: Path) -> Image.Image:
    """Convert a loaded image of any mode to 8-bit RGB (a new image, detached from the file)."""
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in _ALPHA_MODES:
        rgba = im.convert("RGBA")
        out = Image.new("RGB", rgba.size, BACKGROUND)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    if im.mode in _SIXTEEN_BIT or im.mode == "I":
        a = np.asarray(im).astype(np.int64)
        # Round-to-nearest rescale of 0..65535 onto 0..255.
        a = (np.clip(a, 0, 65535) * 255 + 32767) // 65535
        return Image.fromarray(a.astype(np.uint8), "L").convert("RGB")
    if im.mode == "F":
        raise RejectedImage(path, "unsupported mode F (floating-point pixels have no defined 8-bit scale)")
    out = im.convert("RGB")
    # convert() returns self for RGB; copy so nothing refers to the closed file.
    return out.copy() if out is im else out
