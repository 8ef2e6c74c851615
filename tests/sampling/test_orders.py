"""Section orders: coverage, order, sides, and the released inverted indices."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fpk.errors import UsageError
from fpk.sampling.orders import ORDERS, known_frames, plan_sections, released_paddings


def test_released_paddings():
    assert released_paddings(1) == [0]
    assert released_paddings(4) == [3, 2, 1, 0]
    assert released_paddings(7) == [3, 2, 2, 2, 2, 1, 0]


@given(
    st.sampled_from(sorted(ORDERS)),
    st.integers(1, 40),
    st.integers(1, 12),
    st.sampled_from(["released", "time-true"]),
)
def test_every_section_once_and_context_known(order, sections, window, padding):
    plan = plan_sections(order, sections, window, padding)
    assert sorted(s.section for s in plan) == list(range(sections))
    assert [s.order for s in plan] == list(range(sections))
    for k, step in enumerate(plan):
        known = known_frames(plan, k)
        assert not known & set(step.target)
        for side in step.sides:  # the nearest frame of every side is already known, if any
            assert side.origin in known or side.step == +1
            assert (side.origin < step.target.start) == (side.step < 0)


def test_inverted_matches_official_indices():
    """Model positions of the released inverted layout: start 0, then padding*window blank,
    then the target, then the 1x history frame right after it."""
    window = 9
    plan = plan_sections("inverted", 6, window, "released")
    for step, pad in zip(plan, [3, 2, 2, 2, 1, 0], strict=True):
        assert step.target.start + step.shift == 1 + pad * window
        assert step.sides[0].origin + step.shift == 1 + pad * window + window
    assert plan[0].end_anchor and not any(s.end_anchor for s in plan[1:])
    assert [s.section for s in plan] == [5, 4, 3, 2, 1, 0]


def test_time_true_padding_keeps_true_positions():
    assert all(s.shift == 0 for s in plan_sections("inverted", 9, 9, "time-true"))


def test_anti_drifting_endpoints_first_then_both_sides():
    plan = plan_sections("anti-drifting", 4, 9)
    assert plan[0].section == 3
    assert [len(s.sides) for s in plan] == [1, 2, 2, 2]
    assert plan[1].sides[1].origin == plan[0].target.start


def test_unknown_names():
    with pytest.raises(UsageError, match="valid: inverted, anti-drifting, vanilla, forward"):
        plan_sections("sideways", 3, 9)
    with pytest.raises(UsageError, match="padding"):
        plan_sections("inverted", 3, 9, "lots")
