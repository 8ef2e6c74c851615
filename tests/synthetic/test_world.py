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


@given(st.integers(0, 10**9), st.integers(0, 5000))
@settings(max_examples=80, deadline=None)
def test_continuous_scenes_keep_moving_inside_the_frame(seed, frame):
    s = world.continuous_scene(seed)
    assert s == world.continuous_scene(seed) and s.goal in world.MOTIONS
    span = world.SIZE - world.OBJECT
    x, y = s.position(frame)
    assert 0 <= x <= span and 0 <= y <= span
    nx, ny = s.position(frame + 1)
    dx, dy = world.MOTIONS[s.goal]
    # SPEED px a frame on each moving axis, never a jump; still on a fixed axis
    assert abs(nx - x) == world.SPEED * dx and abs(ny - y) == world.SPEED * dy
    assert np.hypot(nx - x, ny - y) < 3
    if frame % 4 == 0:  # a whole token per latent frame
        assert x % world.GRID == 0 and y % world.GRID == 0


def test_continuous_motion_bounces_off_the_edges():
    s = world.Scene("red", "square", "black", (40, 0), "bounces")
    assert [s.position(f) for f in (0, 1, 4, 5, 24)] == [(40, 0), (42, 2), (48, 8), (46, 10),
                                                          (8, 48)]  # fmt: skip
    assert s.position(48) == (40, 0)  # back where it started after one round trip: 48 frames
    assert world.Scene("red", "square", "black", (0, 8), "up and down").position(24) == (0, 40)
    assert world.Scene("red", "square", "black", (0, 8), "left and right").position(24) == (48, 8)
    prompts = {world.continuous_scene(i).prompt.split(" background ")[1] for i in range(60)}
    assert prompts == {"bounces off the walls", "moves left and right", "moves up and down"}


def test_continuous_prompts_spell_only_the_words_the_tokenizers_lack():
    words = {w for i in range(60) for w in world.continuous_scene(i).prompt.split()}
    assert words - set(world.vocabulary()) == set(world.SPELLED_WORDS)
