"""Progress as typed events. The library emits them through a callback; the CLI renders them
(rich, `--quiet`, or one JSON object per line with `--json`, documented in the README).

`SCHEMA` is the version of the JSON lines: it changes when a field is renamed or removed.
Seconds are wall seconds rounded to milliseconds; batch-wide events have `job` "".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

SCHEMA = 1


@dataclass(frozen=True)
class Event:
    """One thing that happened to job `job` (its name); `as_dict` is the `--json` line."""

    job: str

    def as_dict(self) -> dict:
        worker = vars(self).get("worker")  # set by on_worker where a Ray worker sent it
        return {"event": type(self).__name__, "schema": SCHEMA, **asdict(self),
                **({"worker": worker} if worker else {})}  # fmt: skip


def on_worker(event: Event, worker: str) -> Event:
    """`event` tagged with the Ray worker that sent it (`worker` in its JSON line)."""
    object.__setattr__(event, "worker", worker)
    return event


def worker_of(event: Event) -> str:
    return vars(event).get("worker", "")


@dataclass(frozen=True)
class WorkerStarted(Event):
    """A Ray worker is up (`--executor ray`): its name, host and pid; `job` is ""."""

    worker: str
    host: str
    pid: int


@dataclass(frozen=True)
class Loading(Event):
    """A model component starts loading (`source`: its folder); `job` is ""."""

    component: str
    source: str


@dataclass(frozen=True)
class Loaded(Event):
    """Every component is loaded, in `seconds`; `job` is ""."""

    seconds: float


@dataclass(frozen=True)
class JobStarted(Event):
    """A job begins: its place in the batch, pixel frames, sections, steps per section."""

    index: int  # 1-based place in the batch
    total: int
    frames: int
    sections: int
    steps: int
    sampler: str
    resumed_sections: int = 0
    padding: str = ""  # inverted positions: "released" repeats positions (see SectionStarted)


@dataclass(frozen=True)
class SectionEvent(Event):
    """Something of one section: its place in the sampling order and on the timeline."""

    order: int  # place in the sampling order, 0 = first generated
    section: int  # place on the timeline, 0 = right after the start frame


@dataclass(frozen=True)
class SectionStarted(SectionEvent):
    """A section starts sampling, with the packed context it sees (tokens per group)."""

    sections: int
    positions: tuple[int, int]  # model (RoPE) positions of the target, first and last
    context: tuple[tuple[str, int], ...]  # (kernel, tokens) per packed group, anchor last
    context_tokens: int
    target_tokens: int


@dataclass(frozen=True)
class StepDone(SectionEvent):
    """One denoising step of the section finished."""

    step: int
    steps: int


@dataclass(frozen=True)
class SectionDone(SectionEvent):
    """A section is sampled (or `resumed` from the job's store); its wall seconds."""

    seconds: float
    resumed: bool = False


@dataclass(frozen=True)
class FramesWritten(Event):
    """Pixel frames decoded and written so far, of `total`."""

    frames: int
    total: int


@dataclass(frozen=True)
class OutputEvent(Event):
    """Something of a job's final output file."""

    path: str


@dataclass(frozen=True)
class JobDone(OutputEvent):
    """The video is at its final path: its frames, size, sidecar and the job's wall seconds
    (models loading not included)."""

    frames: int
    seconds: float
    resolution: str = ""  # WIDTHxHEIGHT
    sidecar: str = ""


@dataclass(frozen=True)
class JobSkipped(OutputEvent):
    """The job did not run: its output exists (`reason` says why it counts as done)."""

    reason: str


@dataclass(frozen=True)
class JobFailed(Event):
    """The job failed with the one-line `error`; the batch goes on."""

    error: str


@dataclass(frozen=True)
class Message(Event):
    """A line for the user that is not progress (a warning, a note)."""

    text: str


EventSink = Callable[[Event], None]


def ignore(_: Event) -> None:
    """The sink of a caller that wants no progress."""


@dataclass(frozen=True)
class Progress:
    """Where a running job reports: the sink, the stop check (Ctrl-C), its place in the
    batch (1-based `index` of `total`) and whether it keeps a preview of finished sections."""

    sink: EventSink = ignore
    should_stop: Callable[[], bool] | None = None
    index: int = 1
    total: int = 1
    preview: bool = False


SILENT = Progress()  # a job run with no one watching
