"""Section orders (FramePack sec. 3.2, Fig. 2): which section is generated when, and what
it sees. Each planner is a pure function of integers with one signature,
`plan(sections, window, padding) -> tuple[SectionStep, ...]`, kept in a registry by name.

Positions: `target` and the history `sides` are on the video's true timeline (latent frame
0 is the start image). `shift` maps the section's true positions to the positions the model
sees (RoPE), where a layout places the section elsewhere: the released inverted weights put a
section `padding * window` frames after the start frame, whatever its true time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from fpk.errors import UsageError

PADDINGS: tuple[str, ...] = ("released", "time-true")


@dataclass(frozen=True)
class HistorySide:
    """Known frames on one side of the section, to be packed nearest first.

    `origin` is the true position of the nearest known frame, `step` the direction away from
    the section (-1: the past before it, +1: the future after it).
    """

    origin: int
    step: int


@dataclass(frozen=True)
class SectionStep:
    order: int  # place in the sampling order (0 = generated first)
    section: int  # index on the timeline (0 = right after the start frame)
    target: range  # true latent positions of the section
    shift: int  # model position = true position + shift (the start anchor stays at 0)
    sides: tuple[HistorySide, ...]
    end_anchor: bool = False  # the end image sits right after the section (inverted, first)


def released_paddings(sections: int) -> list[int]:
    """Padding (in windows) of each inverted step: [n-1, ..., 0], or [3, 2, ..., 2, 1, 0]
    beyond 4 sections, as the released weights were trained (keeps RoPE in range)."""
    if sections > 4:
        return [3] + [2] * (sections - 3) + [1, 0]
    return list(reversed(range(sections)))


def _window_range(section: int, window: int) -> range:
    return range(1 + section * window, 1 + (section + 1) * window)


def inverted(sections: int, window: int, padding: str = "released") -> tuple[SectionStep, ...]:
    """From the end back toward the start image, which every section approaches."""
    pads = released_paddings(sections) if padding == "released" else list(reversed(range(sections)))
    steps = []
    for order in range(sections):
        section = sections - 1 - order
        target = _window_range(section, window)
        shift = 1 + pads[order] * window - target.start
        steps.append(
            SectionStep(
                order,
                section,
                target,
                shift,
                (HistorySide(origin=target.stop, step=+1),),
                end_anchor=order == 0,
            )
        )
    return tuple(steps)


def vanilla(sections: int, window: int, padding: str = "released") -> tuple[SectionStep, ...]:
    """In time order, each section conditioned on the packed past (drifts, paper Fig. 2a)."""
    return tuple(
        SectionStep(
            i, i, _window_range(i, window), 0, (HistorySide(origin=1 + i * window - 1, step=-1),)
        )
        for i in range(sections)
    )


def forward(sections: int, window: int, padding: str = "released") -> tuple[SectionStep, ...]:
    """In time order with packed history, the layout of the F1 weights (also used by extend)."""
    return vanilla(sections, window, padding)


def anti_drifting(sections: int, window: int, padding: str = "released") -> tuple[SectionStep, ...]:
    """Endpoints first: the last section from the start image alone, then the gaps in time
    order with context on both sides (the past before, the end section after; Fig. 2b)."""
    if sections == 1:
        return vanilla(1, window)
    last = sections - 1
    steps = [
        SectionStep(0, last, _window_range(last, window), 0, (HistorySide(origin=0, step=-1),))
    ]
    future = _window_range(last, window).start
    for i in range(last):
        target = _window_range(i, window)
        steps.append(
            SectionStep(
                i + 1, i, target, 0, (HistorySide(target.start - 1, -1), HistorySide(future, +1))
            )
        )
    return tuple(steps)


Planner = Callable[..., tuple[SectionStep, ...]]
ORDERS: dict[str, Planner] = {
    "inverted": inverted,
    "anti-drifting": anti_drifting,
    "vanilla": vanilla,
    "forward": forward,
}


def plan_sections(
    order: str, sections: int, window: int, padding: str = "released"
) -> tuple[SectionStep, ...]:
    """The sampling plan of `order`; an unknown name lists the valid ones."""
    if order not in ORDERS:
        raise UsageError(f"unknown sampler '{order}' (valid: {', '.join(ORDERS)})")
    if padding not in PADDINGS:
        raise UsageError(f"unknown padding '{padding}' (valid: {', '.join(PADDINGS)})")
    if sections < 1 or window < 1:
        raise UsageError(f"need at least one section of one frame, got {sections} x {window}")
    return ORDERS[order](sections, window, padding)


def known_frames(plan: tuple[SectionStep, ...], upto: int) -> set[int]:
    """True latent positions known before step `upto`: the start frame and earlier sections."""
    known = {0}
    for step in plan[:upto]:
        known.update(step.target)
    return known


def offset(plan: tuple[SectionStep, ...], frames: int) -> tuple[SectionStep, ...]:
    """The same plan `frames` latent frames later on the timeline (after a clip's tail)."""
    return tuple(
        replace(
            s,
            target=range(s.target.start + frames, s.target.stop + frames),
            sides=tuple(HistorySide(side.origin + frames, side.step) for side in s.sides),
        )
        for s in plan
    )
