"""Frame metrics against the world's ground truth: the largest per-frame jump."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fpk.synthetic import metrics, world


@given(st.integers(0, 10**6))
@settings(max_examples=15, deadline=None)
def test_true_motion_never_jumps_more_than_the_world_moves(seed):
    s = world.continuous_scene(seed)
    jump = metrics.largest_jump(world.render(s, 40), s)
    assert 0 < jump <= world.SPEED * np.sqrt(2) + 1e-6
    still = world.Scene(s.colour, s.shape, s.background, s.start, world.STAY)
    assert metrics.largest_jump(world.render(still, 10), still) == 0


def test_a_teleport_is_the_jump_it_makes_even_through_a_fade():
    a = world.Scene("red", "square", "gray", (0, 0), world.STAY)
    b = world.Scene("red", "square", "gray", (48, 0), world.STAY)
    frames = np.concatenate([world.render(a, 5), world.render(b, 5)])
    assert metrics.largest_jump(frames, a) == 48
    blank = np.full_like(frames[:2], 90)  # gone for two frames: 48 px over 3 frames
    faded = np.concatenate([world.render(a, 5), blank, world.render(b, 5)])
    assert metrics.largest_jump(faded, a) == 16
    assert metrics.centre(blank[0], a) is None
