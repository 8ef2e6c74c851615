"""Input images: buckets keep the preset's area and the sizes' multiple; fitting covers and
crops; unusable files get one clear error."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from fpk.config import Resolution
from fpk.errors import UsageError
from fpk.media.images import MAX_ASPECT, buckets, fit_image, nearest_bucket, open_image


@given(side=st.integers(4, 40), multiple=st.sampled_from([8, 16]))
def test_buckets_are_multiples_within_the_aspect_limit(side, multiple):
    base = Resolution(side * multiple, side * multiple)
    for r in buckets(base, multiple):
        assert r.width % multiple == 0 and r.height % multiple == 0
        assert 1 / MAX_ASPECT <= r.width / r.height <= MAX_ASPECT


@given(w=st.integers(16, 4000), h=st.integers(16, 4000))
def test_nearest_bucket_is_the_nearest_aspect(w, h):
    base, multiple = Resolution(832, 480), 16
    got = nearest_bucket(w, h, base, multiple)
    best = min(abs(math.log(r.width / r.height) - math.log(w / h)) for r in buckets(base, 16))
    assert abs(math.log(got.width / got.height) - math.log(w / h)) == best


def test_fit_image_covers_then_centre_crops():
    pixels = np.zeros((40, 100, 3), np.uint8)
    pixels[:, 45:55] = 255  # a bar in the middle survives the crop
    out = fit_image(Image.fromarray(pixels), Resolution(32, 32))
    assert out.shape == (32, 32, 3)
    assert out[:, 16].min() > 200 and out[:, 0].max() < 30


@pytest.mark.parametrize(
    "make, says",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(b"not a picture"), "not an image"),
        (lambda p: Image.new("RGB", (8, 8)).save(p), "too small"),
    ],
)
def test_unusable_images_get_one_clear_error(tmp_path, make, says):
    path = tmp_path / "x.png"
    make(path)
    with pytest.raises(UsageError, match=says):
        open_image(path)


def test_grayscale_opens_as_rgb(tmp_path):
    path = tmp_path / "g.png"
    Image.new("L", (32, 32), 128).save(path)
    assert open_image(path).mode == "RGB"
