"""Property and example tests of the packing engine: integers only, no model."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fpk.errors import PackingError
from fpk.model.packing import (
    LatentGrid,
    Level,
    Schedule,
    closed_form,
    converged_bound,
    frame_tokens,
    is_geometric,
    pack_history,
    rope_position,
    schedule_bound,
)

SEED = Schedule(
    "seed",
    tuple(Level(k, 1) for k in [(1, 2, 2), (1, 4, 2), (1, 4, 4), (1, 8, 4), (1, 8, 8)]),
    tail="pool",
)
RELEASED = Schedule(
    "released", (Level((1, 2, 2), 1), Level((2, 4, 4), 2), Level((4, 8, 8), 16)), fill="zeros"
)


@st.composite
def schedules(draw):
    n = draw(st.integers(1, 6))
    levels = []
    for _ in range(n):
        kt = draw(st.sampled_from([1, 2, 4]))
        kernel = (kt, draw(st.sampled_from([2, 4, 8])), draw(st.sampled_from([2, 4, 8])))
        levels.append(Level(kernel, kt * draw(st.integers(1, 4))))
    return Schedule(
        "random",
        tuple(levels),
        tail=draw(st.sampled_from(["delete", "append", "pool"])),
        fill=draw(st.sampled_from(["none", "zeros"])),
        ratio=draw(st.sampled_from([1.5, 2.0, 3.0, 4.0])),
    )


grids = st.builds(
    LatentGrid, st.integers(4, 20).map(lambda x: 2 * x), st.integers(4, 20).map(lambda x: 2 * x)
)


@settings(max_examples=300, deadline=None)
@given(schedules(), grids, st.integers(0, 300), st.integers(-50, 50), st.sampled_from([-1, 1]))
def test_every_frame_assigned_once_at_its_position(schedule, grid, history, origin, step):
    plan = pack_history(schedule, history, grid, origin=origin, step=step)
    expected = [origin + step * r for r in range(history)]  # by importance rank
    seen: list[int] = []
    rank = 0
    for g in plan.groups:
        real = len(g.positions) - g.zero_frames
        # real frames are the nearest ones of the group; zeros (if any) lie beyond them
        by_rank = sorted(g.positions, key=lambda p: step * p)
        assert by_rank[:real] == expected[rank : rank + real]
        seen += by_rank[:real]
        rank += real
    seen += sorted(plan.dropped, key=lambda p: step * p)
    assert seen == expected  # each frame once, in order of importance, at its own position


@settings(max_examples=300, deadline=None)
@given(schedules(), grids, st.integers(0, 300))
def test_bound_holds(schedule, grid, history):
    plan = pack_history(schedule, history, grid)
    bound = schedule_bound(schedule, grid)
    if schedule.tail == "append":  # grows by exactly one token per tail frame
        no_tail = pack_history(schedule, min(history, schedule.capacity), grid).tokens
        assert plan.tokens == no_tail + max(0, history - schedule.capacity)
    else:
        assert plan.tokens <= bound
    assert plan.padding >= 0


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 6),
    st.sampled_from([2, 4]),
    st.integers(0, 40),
    st.sampled_from(["delete", "pool"]),
)
def test_geometric_exact_equals_closed_form(n_levels, ratio, history, tail):
    """Kernels that divide the latent size: exact count = the paper's closed form (T <= levels)."""
    kernels = [(1, 2, 2)]
    for _ in range(n_levels - 1):  # each level divides the token count by `ratio`
        t, h, w = kernels[-1]
        kernels.append(
            (t, h * 2, w)
            if ratio == 2 and h == w
            else (t, h, w * 2)
            if ratio == 2
            else (t, h * 2, w * 2)
        )
    schedule = Schedule("geo", tuple(Level(k, 1) for k in kernels), tail=tail, ratio=ratio)
    grid = LatentGrid(128, 128)
    lf = frame_tokens(grid)
    assert is_geometric(schedule, grid)
    plan = pack_history(schedule, history, grid)
    assert plan.padding == 0
    if history <= n_levels:
        assert float(plan.exact_tokens) == pytest.approx(closed_form(lf, ratio, history))
    # A pooled tail costs one last-level frame, Lf/l**(n-1); the series' remainder is
    # Lf/l**(n-1) / (l-1): equal for l = 2, smaller for l > 2, where pooling overshoots.
    if tail == "delete" or ratio <= 2:
        assert plan.exact_tokens <= converged_bound(lf, ratio)


def test_seed_schedule_base_resolution():
    grid = LatentGrid(60, 104)  # 832x480
    assert frame_tokens(grid) == 1560
    assert converged_bound(1560, 2) == 3120
    plan = pack_history(SEED, 10_000, grid)
    assert plan.exact_tokens == 3120  # pooled tail fills the geometric remainder exactly
    assert plan.tokens == 3146 and plan.padding == 26  # (1,8,4), (1,8,8) pad 60 -> 64 rows


def test_released_layout_counts_3926_with_anchor():
    grid = LatentGrid(60, 104)
    for history in (0, 1, 5, 19, 1000):
        plan = pack_history(RELEASED, history, grid)
        assert [g.tokens for g in plan.groups] == [1560, 390, 416]
        assert 1560 + plan.tokens == 3926  # start frame + 1x + 2x + 4x


def test_released_inverted_positions_match_official_indices():
    """Inverted: history follows the section; indices as in the official demo."""
    pad, window = 2 * 9, 9
    origin = 1 + pad + window  # first index after the target
    plan = pack_history(RELEASED, 3, LatentGrid(60, 104), origin=origin, step=1)
    one, two, four = plan.groups
    assert list(one.positions) == [origin]
    assert list(two.positions) == [origin + 1, origin + 2]
    assert list(four.positions) == list(range(origin + 3, origin + 19))
    assert four.zero_frames == 16 and two.zero_frames == 0
    assert rope_position(two, 0) == Fraction(2 * origin + 3, 2)


def test_huge_history_is_o_levels():
    plan = pack_history(SEED, 10**12, LatentGrid(60, 104))  # a range, never materialised
    assert plan.groups[-1].frames == 10**12 - 5


@pytest.mark.parametrize(
    "levels, grid, message",
    [
        ((Level((1, 3, 2), 1),), LatentGrid(8, 8), "multiple of the patch size"),
        ((Level((2, 4, 4), 3),), LatentGrid(8, 8), "whole groups"),
        ((Level((1, 16, 16), 1),), LatentGrid(8, 8), "larger than the latent frame"),
        ((Level((0, 2, 2), 1),), LatentGrid(8, 8), "positive"),
        ((), LatentGrid(8, 8), "no levels"),
    ],
)
def test_kernels_that_cannot_apply(levels, grid, message):
    with pytest.raises(PackingError, match=message):
        pack_history(Schedule("bad", levels), 4, grid)


def test_bad_sizes():
    with pytest.raises(PackingError):
        LatentGrid(0, 8)
    with pytest.raises(PackingError):
        pack_history(SEED, -1, LatentGrid(60, 104))
