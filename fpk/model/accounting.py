"""Context-length accounting of a preset: what `fpk inspect-context` reports.

Pure arithmetic over the packing plan (fpk.model.packing) plus the parameter count of the
architecture, computed on the meta device so no weights are allocated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from fpk.config import Preset, Resolution, get_schedule
from fpk.errors import UsageError
from fpk.model.packing import (
    BASE_KERNEL,
    LatentGrid,
    PackPlan,
    Schedule,
    closed_form,
    converged_bound,
    frame_tokens,
    is_geometric,
    pack_history,
    schedule_bound,
)

#: Anchored frames at the finest kernel: the start image every I2V section sees.
DEFAULT_ANCHORS = 1


@dataclass(frozen=True)
class LevelRow:
    role: str
    level: int
    kernel: tuple[int, int, int]
    frames: int
    zero_frames: int
    first_position: int | None
    last_position: int | None
    groups: int
    tokens: int
    exact_tokens: float
    padding: float


@dataclass(frozen=True)
class LayoutCount:
    """Packed counts of one schedule for one history length."""

    schedule: str
    description: str
    ratio: float
    tail: str
    fill: str
    independent: bool
    capacity: int
    kernels: list[tuple[int, int, int]]
    levels: list[LevelRow]
    dropped_frames: int
    history_tokens: int
    history_exact_tokens: float
    padding_tokens: float
    anchor_tokens: int
    input_tokens: int
    schedule_bound: int | None
    geometric: bool


@dataclass(frozen=True)
class ContextReport:
    preset: str
    label: str
    resolution: str
    latent_height: int
    latent_width: int
    patch_kernel: tuple[int, int, int]
    per_frame_tokens: int
    window: int
    predicted_tokens: int
    history_frames: int
    anchor_frames: int
    ratio: float
    converged_input_context: float
    closed_form_history: float
    closed_form_total: float
    layout: LayoutCount
    total_tokens: int
    trained_schedule: str
    layout_in_use: str
    weights_layout: LayoutCount | None
    parameters: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def context_report(
    preset: Preset,
    resolution: Resolution | None = None,
    window: int | None = None,
    history: int = 1000,
    schedule: str | None = None,
    anchors: int = DEFAULT_ANCHORS,
    with_parameters: bool = True,
) -> ContextReport:
    """Account the context of one section of `preset` with `history` frames behind it."""
    window = preset.sampling.window if window is None else window
    _check_counts(window, history, anchors)
    grid = preset.latent_grid(resolution)
    chosen = get_schedule(schedule) if schedule else preset.schedule
    lf = frame_tokens(grid)
    layout = count_layout(chosen, grid, history, anchors)
    in_use = preset.weights.trained_schedule or chosen.name
    running = get_schedule(in_use) if in_use != chosen.name else chosen
    weights_layout = None if running is chosen else count_layout(running, grid, history, anchors)
    params = None
    if with_parameters:
        from fpk.model.transformer import count_parameters  # torch is imported only here

        params = count_parameters(preset.architecture, running)
    return ContextReport(
        preset=preset.name,
        label=preset.label,
        resolution=str(resolution or preset.sampling.resolution),
        latent_height=grid.height,
        latent_width=grid.width,
        patch_kernel=BASE_KERNEL,
        per_frame_tokens=lf,
        window=window,
        predicted_tokens=window * lf,
        history_frames=history,
        anchor_frames=anchors,
        ratio=chosen.ratio,
        converged_input_context=converged_bound(lf, chosen.ratio),
        closed_form_history=closed_form(lf, chosen.ratio, history),
        closed_form_total=closed_form(lf, chosen.ratio, history, predicted=window),
        layout=layout,
        total_tokens=window * lf + layout.input_tokens,
        trained_schedule=preset.weights.trained_schedule,
        layout_in_use=in_use,
        weights_layout=weights_layout,
        parameters=params,
    )


def _check_counts(window: int, history: int, anchors: int) -> None:
    if window <= 0:
        raise UsageError(f"--window must be a positive number of latent frames, got {window}")
    if history < 0:
        raise UsageError(f"--history-frames must be zero or more, got {history}")
    if anchors < 0:
        raise UsageError(f"--anchors must be zero or more, got {anchors}")


def count_layout(schedule: Schedule, grid: LatentGrid, history: int, anchors: int) -> LayoutCount:
    """Counts of `schedule` packing `history` frames, plus `anchors` frames at (1,2,2)."""
    plan = pack_history(schedule, history, grid)
    anchor_tokens = anchors * frame_tokens(grid)
    return LayoutCount(
        schedule=schedule.name,
        description=schedule.description,
        ratio=schedule.ratio,
        tail=schedule.tail,
        fill=schedule.fill,
        independent=schedule.independent,
        capacity=schedule.capacity,
        kernels=list(schedule.kernels),
        levels=_rows(plan),
        dropped_frames=len(plan.dropped),
        history_tokens=plan.tokens,
        history_exact_tokens=float(plan.exact_tokens),
        padding_tokens=float(plan.padding),
        anchor_tokens=anchor_tokens,
        input_tokens=anchor_tokens + plan.tokens,
        schedule_bound=schedule_bound(schedule, grid),
        geometric=is_geometric(schedule, grid),
    )


def _rows(plan: PackPlan) -> list[LevelRow]:
    return [
        LevelRow(
            role=g.role,
            level=g.level + 1,
            kernel=g.kernel,
            frames=g.frames,
            zero_frames=g.zero_frames,
            first_position=g.positions[0] if g.positions else None,
            last_position=g.positions[-1] if g.positions else None,
            groups=g.groups,
            tokens=g.tokens,
            exact_tokens=float(g.exact_tokens),
            padding=float(g.padding),
        )
        for g in plan.groups
    ]
