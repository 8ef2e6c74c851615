"""Input images: opened with one clear error for anything unusable, bucketed to the preset's
area (the nearest aspect ratio), resized to cover and centre-cropped."""

from __future__ import annotations

import errno
import math
from pathlib import Path

import numpy as np

from fpk.config import Resolution
from fpk.errors import UsageError

MIN_IMAGE_SIDE = 16  # pixels; smaller images carry no usable content
MAX_IMAGE_PIXELS = 64_000_000  # refuse decompression bombs before decoding
MAX_ASPECT = 2.5  # widest bucket: width/height (or height/width)


def require_file(path: Path, what: str) -> None:
    """A UsageError unless `path` is a readable regular file, saying what it is instead."""
    try:
        path.stat()
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UsageError(f"{what} {path}: a symlink loop (the link points back at itself); "
                             "give the file itself") from None  # fmt: skip
        raise UsageError(f"{what} {path}: no such file") from None
    if path.is_dir():
        raise UsageError(f"{what} {path}: is a folder, not a file; give one file in it")
    if not path.is_file():
        raise UsageError(f"{what} {path}: not a regular file")


def open_image(path: Path, what: str = "--image"):
    """The image at `path` as RGB, or a UsageError naming what is wrong with it."""
    from PIL import Image, UnidentifiedImageError

    require_file(path, what)
    if path.stat().st_size == 0:
        raise UsageError(f"{what} {path}: the file is empty (0 bytes)")
    try:
        with Image.open(path) as img:
            w, h = img.size
            if w * h > MAX_IMAGE_PIXELS:
                raise UsageError(
                    f"{what} {path}: {w}x{h} is too large ({w * h / 1e6:.0f} MP, limit "
                    f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP); downscale it first"
                )
            if min(w, h) < MIN_IMAGE_SIDE:
                raise UsageError(
                    f"{what} {path}: {w}x{h} is too small (at least {MIN_IMAGE_SIDE} px a side)"
                )
            return _rgb(img)
    except Image.DecompressionBombError:
        raise UsageError(
            f"{what} {path}: the image is too large (over {MAX_IMAGE_PIXELS / 1e6:.0f} MP); "
            "downscale it first"
        ) from None
    except UnidentifiedImageError:
        raise UsageError(
            f"{what} {path}: not an image PIL can read (png, jpg, webp, ...)"
        ) from None
    except OSError as err:
        raise UsageError(f"{what} {path}: cannot read the image ({err})") from None


def _rgb(img):
    """RGB as the photo is meant to be seen: EXIF orientation applied, 16-bit scaled to 8 bits
    (PIL's own conversion clips it to white)."""
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I"):  # 16-bit (I;16) or 32-bit integer greyscale
        deep = np.asarray(img).astype(np.uint32)
        shift = 8 if deep.max() > 255 else 0
        img = Image.fromarray((deep >> shift).clip(0, 255).astype(np.uint8))
    return img.convert("RGB")


def buckets(base: Resolution, multiple: int) -> list[Resolution]:
    """Sizes of about `base`'s area, sides multiples of `multiple`, aspect within 2.5:1."""
    area = base.width * base.height
    out = set()
    for w in range(multiple, int(math.sqrt(area * MAX_ASPECT)) + multiple, multiple):
        h = max(multiple, round(area / w / multiple) * multiple)
        if 1 / MAX_ASPECT <= w / h <= MAX_ASPECT:
            out.add(Resolution(w, h))
    return sorted(out, key=lambda r: r.width)


def nearest_bucket(width: int, height: int, base: Resolution, multiple: int) -> Resolution:
    """The bucket whose aspect ratio is nearest (in log) to width:height."""
    aspect = math.log(width / height)
    return min(
        buckets(base, multiple),
        key=lambda r: (abs(math.log(r.width / r.height) - aspect), -r.width * r.height),
    )


def fit_image(img, size: Resolution) -> np.ndarray:
    """Resize to cover `size` (Lanczos), then centre-crop: uint8 (H, W, 3)."""
    from PIL import Image

    scale = max(size.width / img.width, size.height / img.height)
    w, h = max(size.width, round(img.width * scale)), max(size.height, round(img.height * scale))
    img = img.resize((w, h), Image.Resampling.LANCZOS)
    left, top = (w - size.width) // 2, (h - size.height) // 2
    return np.asarray(img.crop((left, top, left + size.width, top + size.height)))


def fit_image_array(frame: np.ndarray, size: Resolution) -> np.ndarray:
    """`fit_image` for a decoded frame (H, W, 3) uint8; a frame already that size is kept."""
    if frame.shape[:2] == (size.height, size.width):
        return frame
    from PIL import Image

    return fit_image(Image.fromarray(frame), size)
