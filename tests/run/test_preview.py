"""The running job's preview: preview.png beside its finished sections, the video so far."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fpk.run.preview import GREY, MAX_TILES, contact_sheet, tile_positions


@pytest.mark.parametrize("frames", range(1, 80))
def test_tile_positions_spread_over_the_whole_video(frames):
    p = tile_positions(frames)
    assert p[0] == 0 and p[-1] == frames - 1
    assert p == sorted(set(p)) and len(p) <= MAX_TILES
    assert len(p) == min(frames, MAX_TILES)


def test_contact_sheet_places_tiles_in_order_and_greys_the_missing():
    tiles = [np.full((4, 6, 3), 10 * i, np.uint8) for i in range(5)]
    tiles[2] = None
    sheet = contact_sheet(tiles, (4, 6), gap=2)
    assert sheet.shape == (2 * 4 + 2, 3 * 6 + 4, 3)  # 5 tiles: rows of 3
    assert (sheet[0:4, 8:14] == 10).all()  # the second tile, right of the first
    assert (sheet[0:4, 16:22] == GREY).all()  # not sampled yet
    assert (sheet[6:10, 0:6] == 30).all()  # the fourth opens the second row


def test_an_interrupted_job_leaves_a_preview_of_its_finished_sections(tiny_saved, tmp_path):
    from fpk import events as ev
    from fpk.config import load_preset
    from fpk.run import batch
    from fpk.sampling.solvers import Cancelled

    _, _, weights = tiny_saved
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)).save(
        tmp_path / "a.png"
    )
    flags = {"image": tmp_path / "a.png", "len": "20f", "steps": 2, "window": 2, "name": "r"}
    seen = []

    def stop_after_two_sections():
        return sum(isinstance(e, ev.SectionDone) for e in seen) >= 2

    with pytest.raises(Cancelled):
        batch.generate(
            load_preset("tiny"), [{}], flags, tmp_path, weights_dir=weights, sink=seen.append,
            should_stop=stop_after_two_sections, preview=True,
        )  # fmt: skip
    sheet = np.asarray(Image.open(tmp_path / ".fpk-work" / "r" / "preview.png"))
    # 20 frames at window 2: 9 latent frames (start + 4 sections of 2), one 64x64 tile each
    assert sheet.shape == (3 * 64 + 4, 3 * 64 + 4, 3)
    grey = (sheet == GREY).all(axis=-1).mean()
    assert 0 < grey < 1  # the end and the start image are drawn, the middle not yet
