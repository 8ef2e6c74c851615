"""The packed context of one section: which known latents the transformer sees, and where.

The section order (fpk.sampling.orders) says which frames are known and on which side; the packing
schedule (fpk.model.packing) says how each side is compressed; this module turns both into the
transformer's `ContextGroup`s, with model positions (RoPE) = true positions + the step's shift.
The start frame is an anchor at model position 0 under the finest kernel, on every section
(FramePack sec. 3.2: the user's image is always in context).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from fpk.model.packing import BASE_KERNEL, LatentGrid, PackPlan, Schedule, pack_history
from fpk.model.transformer import ContextGroup, groups_from_plan
from fpk.sampling.orders import HistorySide, SectionStep

#: Model position of the start anchor in every layout.
ANCHOR_POSITION = 0


#: Released padding keeps a forward section no further than this many windows from the start
#: anchor (as the released inverted padding keeps it within 3): long videos and long clips
#: then stay at positions the model was trained on.
FORWARD_CAP_WINDOWS = 3


def model_shift(step: SectionStep, schedule: Schedule, padding: str) -> int:
    """Shift from true to model positions for `step`.

    The orders give it for inverted sampling. With released padding, forward sections
    (history only in the past) sit right after a full history when the levels are zero-filled
    (the F1 weights: [start | 4x(16) | 2x(2) | 1x(1) | target], whatever the true time), and
    at most FORWARD_CAP_WINDOWS windows after the anchor otherwise.
    """
    past_only = bool(step.sides) and all(side.step < 0 for side in step.sides)
    if padding != "released" or not past_only:
        return step.shift
    if schedule.fill == "zeros":
        return 1 + ANCHOR_POSITION + schedule.capacity - step.target.start
    window = len(step.target)
    return min(0, 1 + ANCHOR_POSITION + FORWARD_CAP_WINDOWS * window - step.target.start)


def contiguous_known(side: HistorySide, known: set[int]) -> int:
    """How many known frames run from `side.origin` away from the section without a gap."""
    n = 0
    while side.origin + side.step * n in known:
        n += 1
    return n


def side_plans(
    step: SectionStep, schedule: Schedule, grid: LatentGrid, known: set[int]
) -> list[PackPlan]:
    """One packing plan per history side of `step`, over the frames known before it."""
    return [
        pack_history(schedule, contiguous_known(side, known), grid, side.origin, side.step)
        for side in step.sides
    ]


def section_context(
    step: SectionStep,
    schedule: Schedule,
    grid: LatentGrid,
    latents: Mapping[int, torch.Tensor],
    shift: int,
    anchor: torch.Tensor | None,
    end_latent: torch.Tensor | None = None,
    end_strength: float = 1.0,
) -> list[ContextGroup]:
    """Context groups of `step`, least important first, the anchor last.

    `latents` maps true positions to known latent frames (C, H, W); `anchor` (C, H, W) is the
    start frame (None for a context-free section). With `end_latent`, the first inverted
    section sees the end image as the frame right after it, blended by `end_strength` with
    what would otherwise be there.
    """
    known = set(latents)
    frames = _frame_reader(latents, step, end_latent, end_strength)
    if end_latent is not None and step.end_anchor:
        known = known | {step.target.stop}
    groups: list[ContextGroup] = []
    for plan in side_plans(step, schedule, grid, known):
        groups.extend(_shifted(g, shift) for g in groups_from_plan(plan, frames))
    if anchor is not None:
        groups.append(ContextGroup(anchor[:, None], torch.tensor([ANCHOR_POSITION]), BASE_KERNEL))
    return groups


def _frame_reader(
    latents: Mapping[int, torch.Tensor],
    step: SectionStep,
    end_latent: torch.Tensor | None,
    end_strength: float,
) -> Callable[[range], torch.Tensor]:
    def read(positions: range) -> torch.Tensor:
        out = []
        for p in positions:
            if end_latent is not None and step.end_anchor and p == step.target.stop:
                base = latents.get(p, torch.zeros_like(end_latent))
                out.append(end_strength * end_latent + (1 - end_strength) * base)
            else:
                out.append(latents[p])
        if not out:  # a level held only by zero frames
            like = next(iter(latents.values()), end_latent)
            if like is None:
                raise ValueError("an empty context level needs a known latent for its shape")
            return like.new_zeros(like.shape[0], 0, *like.shape[1:])
        return torch.stack(out, dim=1)  # (C, F, H, W)

    return read


def _shifted(group: ContextGroup, shift: int) -> ContextGroup:
    return ContextGroup(group.latents, group.positions + shift, group.kernel, group.mode)


def context_tokens(groups: list[ContextGroup], grid: LatentGrid) -> list[tuple[str, int]]:
    """(kernel label, tokens) of each group, as the transformer will embed them."""
    out = []
    for g in groups:
        kt, kh, kw = g.kernel
        per_frame = -(-grid.height // kh) * -(-grid.width // kw)
        frames = g.latents.shape[1]
        count = {"frames": -(-frames // kt) * per_frame, "pool": per_frame, "append": frames}
        suffix = "" if g.mode == "frames" else f" {g.mode}"
        out.append((f"({kt},{kh},{kw}){suffix}", count[g.mode]))
    return out
