"""Running a batch: check every job, load the models once, run the jobs, record each outcome.

A job that fails (bad input, a model error) is reported and the batch goes on; a job whose
output is already complete with the same settings is skipped; Ctrl-C (`should_stop`) stops
after the current denoising step and leaves the finished sections on disk for a rerun.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fpk import events as ev
from fpk.config import Preset
from fpk.errors import FpkError
from fpk.media.video import check_writable
from fpk.run.jobs import JobSpec, Planned, is_done
from fpk.run.locks import claim_each, tidy_done

if TYPE_CHECKING:
    from fpk.model.offload import DeviceOptions
    from fpk.run.runtime import Runtime


@dataclass(frozen=True)
class Outcome:
    """What became of one job; `as_dict` is the `--json` "Outcome" line."""

    name: str
    status: str  # "done", "skipped", "failed"
    detail: str  # the output path, or the error
    seconds: float = 0.0  # the job's own wall seconds (models loading not included)
    code: int = 0  # the exit code a single failed job gives
    frames: int = 0
    resolution: str = ""
    sidecar: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"event": "Outcome", "schema": ev.SCHEMA, **asdict(self)}


def weights_identity(preset: Preset, weights_dir: Path | None, parts: list[str]) -> str:
    """A cheap fingerprint of the weights a batch will load: file names and sizes."""
    from fpk.model.loading import resolve_all

    listing = {}
    for part, folder in resolve_all(preset, weights_dir, parts).items():
        listing[part] = sorted((p.name, p.stat().st_size) for p in folder.iterdir() if p.is_file())
    blob = json.dumps(listing, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def run_batch(
    planned: list[Planned],
    load_runtime: Callable[[ev.EventSink], Any],
    run_one: Callable[..., Path],
    sink: ev.EventSink = ev.ignore,
    should_stop: Callable[[], bool] | None = None,
    overwrite: bool = False,
    preview: bool = False,
) -> list[Outcome]:
    """Run the planned jobs; the models load only if some job needs running. Outcomes come
    in manifest order; `preview`: each job keeps a contact sheet of its finished sections."""
    outcomes, todo = triage(planned, sink, overwrite)
    if todo:
        t0 = time.perf_counter()
        runtime = load_runtime(sink)
        sink(ev.Loaded("", round(time.perf_counter() - t0, 3)))
        claims = claim_each(todo, lambda item: item[1], should_stop)  # one process a job
        with contextlib.closing(claims):
            for n, (i, job) in claims:
                progress = ev.Progress(sink, should_stop, n, len(todo), preview)
                outcomes[i] = _unless_made(run_one, runtime, job, progress, overwrite)
    return [outcomes[i] for i in sorted(outcomes)]


def triage(
    planned: list[Planned], sink: ev.EventSink, overwrite: bool
) -> tuple[dict[int, Outcome], list[tuple[int, JobSpec]]]:
    """The outcomes known before any model loads (bad jobs, finished ones), by manifest index,
    and the (index, job) pairs left to run."""
    outcomes: dict[int, Outcome] = {}
    todo: list[tuple[int, JobSpec]] = []
    for i, p in enumerate(planned):
        if p.job is None:
            assert p.error is not None
            outcomes[i] = Outcome(p.label, "failed", str(p.error), code=p.error.exit_code)
            sink(ev.JobFailed(p.label, str(p.error)))
        elif not overwrite and is_done(p.job):
            outcomes[i] = _skipped(p.label, p.job, "already done with these settings", sink)
        else:
            todo.append((i, p.job))
    for out in dict.fromkeys(job.out for _, job in todo):  # each folder once, not each job
        check_writable(out)
    return outcomes, todo


def run_claimed(
    run_one: Callable[..., Path],
    runtime: Any,
    job: JobSpec,
    progress: ev.Progress,
    overwrite: bool,
) -> Outcome:
    """`job` run with its lock held (see fpk.run.locks); skipped if another process made it."""
    claims = claim_each([job], lambda j: j, progress.should_stop)
    with contextlib.closing(claims):
        for _, job in claims:
            return _unless_made(run_one, runtime, job, progress, overwrite)
    raise AssertionError("claim_each yields every job")  # pragma: no cover


def _unless_made(run_one, runtime: Any, job: JobSpec, progress: ev.Progress, overwrite: bool):
    """A claimed job's outcome: skipped where another process made it while we waited."""
    if not overwrite and is_done(job):
        return _skipped(job.name, job, "made by another fpk process", progress.sink)
    return _run_one(run_one, runtime, job, progress)


def _run_one(run_one: Callable[..., Path], runtime: Any, job: JobSpec, progress: ev.Progress):
    """One job's outcome; a failure is reported and returned, not raised (the batch goes on)."""
    t0 = time.perf_counter()
    done: list[ev.JobDone] = []

    def sink(event: ev.Event) -> None:
        if isinstance(event, ev.JobDone):
            done.append(event)
        progress.sink(event)

    try:
        path = run_one(runtime, job, dataclasses.replace(progress, sink=sink))
    except FpkError as err:
        return _failed(job.name, str(err), t0, progress.sink, err.exit_code)
    except (RuntimeError, OSError, ValueError) as err:  # e.g. out of memory: next job
        return _failed(job.name, f"{type(err).__name__}: {err}", t0, progress.sink)
    seconds = round(time.perf_counter() - t0, 3)
    if not done:
        return Outcome(job.name, "done", str(path), seconds)
    d = done[-1]
    return Outcome(job.name, "done", str(path), seconds, 0, d.frames, d.resolution, d.sidecar)


def _skipped(name: str, job: JobSpec, reason: str, sink: ev.EventSink) -> Outcome:
    tidy_done(job)
    sink(ev.JobSkipped(name, str(job.output), reason))
    return Outcome(name, "skipped", str(job.output), sidecar=str(job.sidecar))


def _failed(name: str, message: str, t0: float, sink: ev.EventSink, code: int = 1) -> Outcome:
    message = message.strip().splitlines()[0] if message.strip() else "failed"
    sink(ev.JobFailed(name, message))
    return Outcome(name, "failed", message, round(time.perf_counter() - t0, 3), code)


def generate(
    preset: Preset,
    entries: list[dict[str, Any]],
    flags: dict[str, Any],
    out: Path,
    *,
    manifest: Path | None = None,
    weights_dir: Path | None = None,
    device: str | None = None,
    dtype: str | None = None,
    sink: ev.EventSink = ev.ignore,
    should_stop: Callable[[], bool] | None = None,
    overwrite: bool = False,
    preview: bool = False,
    shard: tuple[int, int] | None = None,
    ray: Any = None,
    device_options: DeviceOptions | None = None,
) -> list[Outcome]:
    """`fpk generate` (and `fpk extend`, whose entries carry `video`): plan, load, run; only
    shard (I, N) of the manifest's entries where given; on a Ray cluster where `ray` (a
    `fpk.run.distributed.RaySpec`) is given; the models placed as `device_options` say
    (fpk.model.offload)."""
    from fpk.model.loading import COMPONENTS
    from fpk.run.jobs import plan_jobs

    identity = weights_identity(preset, weights_dir, list(COMPONENTS))
    planned = plan_jobs(preset, entries, flags, out, manifest, identity)
    if shard is not None:
        from fpk.run.distributed import shard_of

        planned = shard_of(planned, *shard)
    if ray is not None:
        from fpk.run import distributed as d

        models = d.Models(preset, weights_dir, device, dtype, device_options)
        return d.run_on_ray(ray, planned, models, sink, should_stop, overwrite, preview)

    def load(sink: ev.EventSink):
        return load_runtime(preset, weights_dir, device, dtype, sink, device_options)

    return run_batch(planned, load, run_any, sink, should_stop, overwrite, preview)


def load_runtime(
    preset: Preset,
    weights_dir: Path | None,
    device: str | None,
    dtype: str | None,
    sink: ev.EventSink = ev.ignore,
    device_options: DeviceOptions | None = None,
):
    """The models of `preset` on the chosen device, placed as `device_options` say (offloading, a
    VRAM budget, fp8: fpk.model.offload); a `Loading` event before each component and a
    `Message` with the plan where one was made."""
    from fpk.model.devices import pick_device, pick_dtype
    from fpk.model.loading import load_components
    from fpk.model.offload import DeviceOptions, place_components
    from fpk.run.runtime import Runtime

    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    options = device_options or DeviceOptions()

    def loading(component: str, source: str) -> None:
        sink(ev.Loading("", component, source))

    first = "cpu" if options.planned(dev) else dev
    comps = load_components(preset, weights_dir, dtype=dt, device=first, on_load=loading)
    plan = place_components(comps, preset, options, dev, dt)
    if plan is not None:
        sink(ev.Message("", plan.describe()))
    return Runtime(preset, comps, dev, dt)


def run_any(runtime: Runtime, job: JobSpec, progress: ev.Progress) -> Path:
    """Generate, or extend where the job names a clip; with the job's LoRAs fused."""
    runtime.use_loras(job.lora)
    if job.video is not None:
        from fpk.run.extend import run_extend

        return run_extend(runtime, job, progress)
    from fpk.run.pipeline import run_job

    return run_job(runtime, job, progress)
