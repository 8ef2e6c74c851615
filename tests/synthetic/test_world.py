"""The synthetic world: deterministic, goal reached, the object where `position` says."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fpk.synthetic import world


@given(st.integers(0, 10**9))
@settings(max_examples=50, deadline=None)
def test_scene_is_deterministic_and_reaches_its_goal(seed):
    s = world.scene(seed)
    assert s == world.scene(seed)
    end = s.position(10_000)
    if s.goal == world.STAY:
        assert end == s.start
    else:
        assert end == world.CORNERS[s.goal]
        steps = max(abs(a - b) for a, b in zip(s.start, end, strict=True)) // world.SPEED
        assert s.position(steps) == end  # arrives at SPEED px a frame, then stops
    x, y = s.position(0)
    assert x % world.GRID == 0 and y % world.GRID == 0


def test_render_draws_the_object_in_its_colour_where_it_is():
    s = world.Scene("red", "square", "black", (8, 16), "bottom right")
    frames = world.render(s, 30)
    assert frames.shape == (30, world.SIZE, world.SIZE, 3) and frames.dtype == np.uint8
    for i in (0, 7, 29):
        x, y = s.position(i)
        patch = frames[i, y : y + world.OBJECT, x : x + world.OBJECT]
        assert (patch == world.COLOURS["red"]).all()
        assert (frames[i] == world.COLOURS["red"]).all(-1).sum() == world.OBJECT**2


def test_prompt_words_are_in_the_vocabulary():
    vocab = set(world.vocabulary())
    for seed in range(200):
        assert set(world.scene(seed).prompt.split()) <= vocab | {"top", "bottom"}


def test_palette_share_tells_world_frames_from_photos():
    import numpy as np

    assert all(world.palette_share(world.render_frame(world.scene(s), 7)) == 1 for s in range(50))
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)  # noise: no palette at all
    assert world.palette_share(photo) < 0.2
