"""Lengths and section grids."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fpk.errors import UsageError
from fpk.sampling.timeline import official_section_count, parse_length, section_grid


@pytest.mark.parametrize(
    "text, frames",
    [
        ("5s", 150),
        ("1m30s", 2700),
        ("150f", 150),
        ("2.5", 75),
        ("1h", 108000),
        ("0.5s", 15),
        ("1m", 1800),
        (" 10S ", 300),
    ],
)
def test_parse_length(text, frames):
    assert parse_length(text, 30) == frames


@pytest.mark.parametrize("text", ["", "0s", "-5s", "abc", "0f", "5x", "1e9", "7h", "s", "f"])
def test_bad_lengths(text):
    with pytest.raises(UsageError, match="--len"):
        parse_length(text, 30)


def test_five_seconds_is_150_frames_from_5_sections():
    grid = section_grid(parse_length("5s", 30), window=9)
    assert grid.sections == 5 and grid.generated_frames == 181 and grid.trimmed == 31
    assert official_section_count(5, 9) == 4  # the demo's 4*36+1 = 145 frames, short of 150


@given(st.integers(1, 100_000), st.integers(1, 33), st.sampled_from([1, 2, 4, 8]))
def test_grid_covers_with_fewest_sections(frames, window, temporal):
    grid = section_grid(frames, window, temporal)
    assert grid.generated_frames >= frames
    if grid.sections > 1:  # one section fewer would not cover
        assert (grid.sections - 1) * window * temporal + 1 < frames
    assert grid.section_frames(grid.sections - 1).stop == grid.latent_frames
