"""Running a batch: check every job, load the models once, run the jobs, record each outcome.

A job that fails (bad input, a model error) is reported and the batch goes on; a job whose
output is already complete with the same settings is skipped; Ctrl-C (`should_stop`) stops
after the current denoising step and leaves the finished sections on disk for a rerun.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fpk import events as ev
from fpk.config import Preset
from fpk.errors import FpkError
from fpk.media.video import check_writable
from fpk.run.jobs import JobSpec, Planned, is_done
from fpk.run.locks import claim_each

if TYPE_CHECKING:
    from fpk.run.runtime import Runtime


@dataclass(frozen=True)
class Outcome:
    name: str
    status: str  # "done", "skipped", "failed"
    detail: str  # the output path, or the error
    seconds: float = 0.0
    code: int = 0  # the exit code a single failed job gives


def weights_identity(preset: Preset, weights_dir: Path | None, parts: list[str]) -> str:
    """A cheap fingerprint of the weights a batch will load: file names and sizes."""
    from fpk.model.loading import resolve

    listing = {}
    for part in parts:
        folder = resolve(preset, part, weights_dir)
        listing[part] = sorted((p.name, p.stat().st_size) for p in folder.iterdir() if p.is_file())
    blob = json.dumps(listing, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def run_batch(
    planned: list[Planned],
    load_runtime: Callable[[], Any],
    run_one: Callable[..., Path],
    sink: ev.EventSink = ev.ignore,
    should_stop: Callable[[], bool] | None = None,
    overwrite: bool = False,
) -> list[Outcome]:
    """Run the planned jobs; the models load only if some job needs running."""
    outcomes: list[Outcome] = []
    todo = []
    for p in planned:
        if p.job is None:
            outcomes.append(Outcome(p.label, "failed", str(p.error), code=p.error.exit_code))
            sink(ev.JobFailed(p.label, str(p.error)))
        elif not overwrite and is_done(p.job):
            outcomes.append(_skipped(p.label, p.job, "already done with these settings", sink))
        else:
            todo.append(p.job)
    if not todo:
        return outcomes
    for job in todo:
        check_writable(job.out)
    runtime = load_runtime()
    claims = claim_each(todo, lambda job: job, should_stop)  # one process a job
    with contextlib.closing(claims):
        for i, job in claims:
            if not overwrite and is_done(job):
                outcomes.append(_skipped(job.name, job, "made by another fpk process", sink))
                continue
            outcomes.append(
                _run_one(run_one, runtime, job, ev.Progress(sink, should_stop, i, len(todo)))
            )
    return outcomes


def _run_one(run_one: Callable[..., Path], runtime: Any, job: JobSpec, progress: ev.Progress):
    """One job's outcome; a failure is reported and returned, not raised (the batch goes on)."""
    t0 = time.perf_counter()
    try:
        path = run_one(runtime, job, progress)
    except FpkError as err:
        return _failed(job.name, str(err), t0, progress.sink, err.exit_code)
    except (RuntimeError, OSError, ValueError) as err:  # e.g. out of memory: next job
        return _failed(job.name, f"{type(err).__name__}: {err}", t0, progress.sink)
    return Outcome(job.name, "done", str(path), time.perf_counter() - t0)


def _skipped(name: str, job: JobSpec, reason: str, sink: ev.EventSink) -> Outcome:
    sink(ev.JobSkipped(name, str(job.output), reason))
    return Outcome(name, "skipped", str(job.output))


def _failed(name: str, message: str, t0: float, sink: ev.EventSink, code: int = 1) -> Outcome:
    message = message.strip().splitlines()[0] if message.strip() else "failed"
    sink(ev.JobFailed(name, message))
    return Outcome(name, "failed", message, time.perf_counter() - t0, code)


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
) -> list[Outcome]:
    """`fpk generate` (and `fpk extend`, whose entries carry `video`): plan, load, run."""
    from fpk.model.loading import COMPONENTS
    from fpk.run.jobs import plan_jobs

    identity = weights_identity(preset, weights_dir, list(COMPONENTS))
    planned = plan_jobs(preset, entries, flags, out, manifest, identity)

    def load():
        return load_runtime(preset, weights_dir, device, dtype)

    return run_batch(planned, load, run_any, sink, should_stop, overwrite)


def load_runtime(preset: Preset, weights_dir: Path | None, device: str | None, dtype: str | None):
    from fpk.model.devices import pick_device, pick_dtype
    from fpk.model.loading import load_components
    from fpk.run.runtime import Runtime

    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    comps = load_components(preset, weights_dir, dtype=dt, device=dev)
    return Runtime(preset, comps, dev, dt)


def run_any(runtime: Runtime, job: JobSpec, progress: ev.Progress) -> Path:
    """Generate, or extend where the job names a clip."""
    if job.video is not None:
        from fpk.run.extend import run_extend

        return run_extend(runtime, job, progress)
    from fpk.run.pipeline import run_job

    return run_job(runtime, job, progress)
