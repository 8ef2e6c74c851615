"""Frame-context packing: which history frame goes to which patchify kernel.

FramePack (Zhang & Agrawala, 2025, sec. 3) gives each input frame a context length by its
importance: the frame nearest to the prediction keeps the full patchify kernel, older frames
get larger kernels, so the total context converges however long the history grows:

    L = S*Lf + Lf * (1 - 1/lambda**T) / (1 - 1/lambda)  ->  S*Lf + Lf * lambda / (lambda - 1)

Everything here is a pure function of integers: no model, no tensors. Frame positions are
positions on the video's timeline (latent frames), which the transformer turns into RoPE.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from fpk.errors import PackingError

Kernel = tuple[int, int, int]  # (t, h, w) in latent frames / latent pixels
TailMode = Literal["delete", "append", "pool"]
TAIL_MODES: tuple[str, ...] = ("delete", "append", "pool")
FillMode = Literal["none", "zeros"]
FILL_MODES: tuple[str, ...] = ("none", "zeros")


def as_kernel(values: Sequence[int]) -> Kernel:
    """A (t, h, w) kernel from three integers (a weight's shape, a conv's kernel_size)."""
    t, h, w = (int(v) for v in values)
    return t, h, w


#: The patchify kernel of the predicted frames (HunyuanVideo: patch_size_t=1, patch_size=2).
BASE_KERNEL: Kernel = (1, 2, 2)


@dataclass(frozen=True)
class Level:
    """One importance level: `frames` consecutive history frames patchified with `kernel`."""

    kernel: Kernel
    frames: int


@dataclass(frozen=True)
class Schedule:
    """A packing schedule, expressed as data (paper sec. 3.1, "FramePack variants").

    `levels` run from most to least important. Frames past the last level follow `tail`:
    "delete" drops them, "append" adds each as a single token (the frame averaged to one
    latent pixel, paper's option 2), "pool" averages them all into one frame that the last
    kernel patchifies (paper's option 3). `fill="zeros"` means a level that history does not
    fill is padded with zero latents, as the released weights were trained (token count
    fixed); `fill="none"` packs only frames that exist. `ratio` is the lambda of the closed
    form the schedule approximates. A pooled tail costs one last-level frame, which equals
    the geometric remainder for lambda = 2 and exceeds it for lambda > 2.
    """

    name: str
    levels: tuple[Level, ...]
    tail: TailMode = "delete"
    fill: FillMode = "none"
    ratio: float = 2.0
    independent: bool = True
    description: str = ""

    @property
    def capacity(self) -> int:
        """History frames the levels hold before the tail rule applies."""
        return sum(level.frames for level in self.levels)

    @property
    def kernels(self) -> tuple[Kernel, ...]:
        """Distinct kernels in order of first use: one input projection each."""
        return tuple(dict.fromkeys(level.kernel for level in self.levels))


@dataclass(frozen=True)
class PackedGroup:
    """A run of history frames that share one kernel in the packed context.

    `positions` are the timeline positions (ascending) of all its frames; the `zero_frames`
    farthest from the section hold zero latents (fill="zeros"), the rest real history.
    `tokens` is what the
    transformer sees after padding the frame to a multiple of the kernel; `exact_tokens` is the
    unpadded count the closed form speaks of.
    """

    role: Literal["level", "tail-pool", "tail-append"]
    level: int
    kernel: Kernel
    positions: range
    zero_frames: int
    groups: int
    tokens: int
    exact_tokens: Fraction

    @property
    def frames(self) -> int:
        return len(self.positions)

    @property
    def padding(self) -> Fraction:
        return self.tokens - self.exact_tokens


@dataclass(frozen=True)
class PackPlan:
    """The packed history of one section: groups by importance, and what the tail dropped."""

    groups: tuple[PackedGroup, ...]
    dropped: range
    history_frames: int
    step: int = -1  # -1: history precedes the section; +1: it follows (inverted)

    def real_positions(self, group: PackedGroup) -> range:
        """Positions of the group's frames that exist (zero frames lie farthest away)."""
        n = len(group.positions) - group.zero_frames
        return group.positions[-n:] if self.step < 0 and n else group.positions[:n]

    @property
    def tokens(self) -> int:
        return sum(g.tokens for g in self.groups)

    @property
    def exact_tokens(self) -> Fraction:
        return sum((g.exact_tokens for g in self.groups), Fraction(0))

    @property
    def padding(self) -> Fraction:
        return self.tokens - self.exact_tokens


@dataclass(frozen=True)
class LatentGrid:
    """Size of one latent frame (height, width in latent pixels)."""

    height: int
    width: int

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise PackingError(f"latent size must be positive, got {self.height}x{self.width}")


def frame_tokens(grid: LatentGrid, kernel: Kernel = BASE_KERNEL) -> int:
    """Tokens of one frame (one temporal group) under `kernel`, the frame padded to fit."""
    return math.ceil(grid.height / kernel[1]) * math.ceil(grid.width / kernel[2])


def exact_frame_tokens(grid: LatentGrid, kernel: Kernel) -> Fraction:
    """Tokens per frame without padding: H*W / (kt*kh*kw), the paper's accounting."""
    return Fraction(grid.height * grid.width, kernel[0] * kernel[1] * kernel[2])


def validate_schedule(
    schedule: Schedule,
    grid: LatentGrid | None = None,
    fix: str = "use a higher resolution or smaller kernels",
) -> None:
    """Raise PackingError naming the first thing that keeps `schedule` from applying; `fix`:
    what to do about a kernel larger than the latent frame."""
    where = f"schedule '{schedule.name}'"
    if not schedule.levels:
        raise PackingError(f"{where} has no levels; give at least one [[levels]] entry")
    if schedule.tail not in TAIL_MODES:
        raise PackingError(f"{where}: tail '{schedule.tail}' is not one of {', '.join(TAIL_MODES)}")
    if schedule.fill not in FILL_MODES:
        raise PackingError(f"{where}: fill '{schedule.fill}' is not one of {', '.join(FILL_MODES)}")
    if not schedule.ratio > 1:
        raise PackingError(f"{where}: lambda must be greater than 1, got {schedule.ratio}")
    for i, level in enumerate(schedule.levels):
        _validate_level(where, i, level, grid, fix)


def _validate_level(where: str, i: int, level: Level, grid: LatentGrid | None, fix: str) -> None:
    kt, kh, kw = level.kernel
    name = f"{where}, level {i + 1}, kernel {level.kernel}"
    if min(level.kernel) <= 0 or level.frames <= 0:
        raise PackingError(f"{name}: kernel sizes and frame counts must be positive")
    if kh % BASE_KERNEL[1] or kw % BASE_KERNEL[2]:
        raise PackingError(
            f"{name}: spatial kernel must be a multiple of the patch size {BASE_KERNEL[1:]} "
            "so that its RoPE can be pooled from the patch grid"
        )
    if level.frames % kt:
        raise PackingError(f"{name}: {level.frames} frames do not fill whole groups of {kt}")
    if grid is not None and (kh > grid.height or kw > grid.width):
        raise PackingError(
            f"{name} is larger than the latent frame {grid.height}x{grid.width}; {fix}"
        )


def pack_history(
    schedule: Schedule, history: int, grid: LatentGrid, origin: int = 0, step: int = -1
) -> PackPlan:
    """Assign `history` frames to the schedule's levels, most important first.

    The frame of importance rank r (0 = nearest to the predicted section) sits at timeline
    position `origin + step * r`: step=-1 for a past that precedes the section (forward
    sampling), +1 for a future that follows it (inverted sampling). Runs in O(levels),
    whatever `history` is.
    """
    if history < 0:
        raise PackingError(f"history frames must be zero or more, got {history}")
    if step not in (-1, 1):
        raise PackingError(f"step must be -1 or +1, got {step}")
    validate_schedule(schedule, grid)
    groups: list[PackedGroup] = []
    rank = 0
    for i, level in enumerate(schedule.levels):
        real = max(0, min(level.frames, history - rank))
        zeros = level.frames - real if schedule.fill == "zeros" else 0
        if real or zeros:
            pos = _positions(origin, step, rank, real + zeros)
            groups.append(_level_group(i, level, grid, pos, zeros))
        rank += level.frames
    tail = _positions(origin, step, rank, max(0, history - rank))
    groups.extend(_tail_groups(schedule, grid, tail))
    dropped = tail if schedule.tail == "delete" else range(0)
    return PackPlan(groups=tuple(groups), dropped=dropped, history_frames=history, step=step)


def _positions(origin: int, step: int, first_rank: int, count: int) -> range:
    """Ascending timeline positions of `count` frames starting at importance `first_rank`."""
    if count <= 0:
        return range(0)
    near, far = origin + step * first_rank, origin + step * (first_rank + count - 1)
    return range(min(near, far), max(near, far) + 1)


def _level_group(i: int, level: Level, grid: LatentGrid, pos: range, zeros: int) -> PackedGroup:
    frames = len(pos)
    groups = math.ceil(frames / level.kernel[0])
    return PackedGroup(
        role="level",
        level=i,
        kernel=level.kernel,
        positions=pos,
        zero_frames=zeros,
        groups=groups,
        tokens=groups * frame_tokens(grid, level.kernel),
        exact_tokens=frames * exact_frame_tokens(grid, level.kernel),
    )


def _tail_groups(schedule: Schedule, grid: LatentGrid, tail: range) -> list[PackedGroup]:
    if not tail or schedule.tail == "delete":
        return []
    last = len(schedule.levels) - 1
    if schedule.tail == "append":
        # Paper's option 2: every tail frame adds a single token (the frame's global average).
        one_pixel: Kernel = (1, grid.height, grid.width)
        n = len(tail)
        return [PackedGroup("tail-append", last, one_pixel, tail, 0, n, n, Fraction(n))]
    # Paper's option 3: all tail frames averaged into one frame under the largest kernel.
    kernel = schedule.levels[-1].kernel
    spatial = (1, kernel[1], kernel[2])
    return [
        PackedGroup(
            "tail-pool",
            last,
            kernel,
            tail,
            0,
            1,
            frame_tokens(grid, spatial),
            exact_frame_tokens(grid, spatial),
        )
    ]


def rope_position(group: PackedGroup, index: int) -> Fraction:
    """RoPE frame position of temporal group `index`: the mean position of the frames it covers.

    Zero-filled frames keep the positions the layout gives them; a pooled tail is one group
    sitting at the mean of all the frames it averages.
    """
    if group.role == "tail-pool":
        return Fraction(group.positions[0] + group.positions[-1], 2)
    if group.role == "tail-append":
        return Fraction(group.positions[index])
    kt = group.kernel[0]
    chunk = group.positions[index * kt : (index + 1) * kt]
    # A short last group is padded by repeating its last frame (replicate padding).
    padded = list(chunk) + [chunk[-1]] * (kt - len(chunk))
    return Fraction(sum(padded), kt)


# --- context accounting ------------------------------------------------------------------


def closed_form(frame_tokens_: int, ratio: float, history: int, predicted: int = 0) -> float:
    """The paper's L = S*Lf + Lf*(1 - 1/lambda**T)/(1 - 1/lambda) (eq. 2)."""
    return predicted * frame_tokens_ + frame_tokens_ * (1 - ratio**-history) / (1 - 1 / ratio)


def converged_bound(frame_tokens_: int, ratio: float) -> float:
    """The limit of the input context as T grows: Lf * lambda / (lambda - 1)."""
    return frame_tokens_ * ratio / (ratio - 1)


def schedule_bound(schedule: Schedule, grid: LatentGrid) -> int | None:
    """Most packed history tokens the schedule can ever produce (None: it grows without end)."""
    if schedule.tail == "append":
        return None
    full = pack_history(schedule, schedule.capacity + 1, grid)
    return full.tokens


def is_geometric(schedule: Schedule, grid: LatentGrid) -> bool:
    """True where level i holds one frame of exactly Lf / lambda**i tokens (paper's eq. 2)."""
    lf = exact_frame_tokens(grid, BASE_KERNEL)
    ratio = Fraction(schedule.ratio).limit_denominator(1000)
    return all(
        level.frames == level.kernel[0] == 1
        and exact_frame_tokens(grid, level.kernel) == lf / ratio**i
        for i, level in enumerate(schedule.levels)
    )
