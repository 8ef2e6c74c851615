"""Progress as typed events. The library emits them through a callback; the CLI renders them
(rich, `--quiet`, or one JSON object per line with `--json`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Event:
    job: str

    def as_dict(self) -> dict:
        return {"event": type(self).__name__, **asdict(self)}


@dataclass(frozen=True)
class JobStarted(Event):
    index: int  # 1-based place in the batch
    total: int
    frames: int
    sections: int
    steps: int
    sampler: str
    resumed_sections: int = 0


@dataclass(frozen=True)
class SectionStarted(Event):
    order: int  # place in the sampling order, 0 = first generated
    section: int  # place on the timeline, 0 = right after the start frame
    sections: int
    positions: tuple[int, int]  # model (RoPE) positions of the target, first and last
    context: tuple[tuple[str, int], ...]  # (kernel, tokens) per packed group, anchor last
    context_tokens: int
    target_tokens: int


@dataclass(frozen=True)
class StepDone(Event):
    order: int
    step: int
    steps: int


@dataclass(frozen=True)
class SectionDone(Event):
    order: int
    section: int
    seconds: float
    resumed: bool = False


@dataclass(frozen=True)
class FramesWritten(Event):
    frames: int
    total: int


@dataclass(frozen=True)
class JobDone(Event):
    path: str
    frames: int
    seconds: float


@dataclass(frozen=True)
class JobSkipped(Event):
    path: str
    reason: str


@dataclass(frozen=True)
class JobFailed(Event):
    error: str


@dataclass(frozen=True)
class Message(Event):
    text: str


EventSink = Callable[[Event], None]


def ignore(_: Event) -> None:
    """The sink of a caller that wants no progress."""
