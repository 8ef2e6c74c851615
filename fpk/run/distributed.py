"""Batches beyond one process: a manifest's deterministic shard for array jobs (Slurm,
Kubernetes), and an executor that spreads a batch over a Ray cluster.

On Ray, one actor per GPU (or CPU slot) loads the models once and takes jobs longest-first.
Every promise of the single-process run holds: the driver plans and checks every job first,
skips finished ones, and each worker runs a job under its lock (fpk.run.locks) with the resume
store beside the outputs, so a job whose worker dies is retried once on another worker from
its finished sections. Events come back to the driver through a Ray queue, tagged with their
worker. Ray is optional (`pip install 'fpk[ray]'`) and imported only here.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fpk import events as ev
from fpk.config import Preset
from fpk.errors import UsageError
from fpk.run.batch import Outcome, run_any, run_claimed, triage
from fpk.run.jobs import JobSpec, Planned

T = TypeVar("T")
POLL_SECONDS = 0.1  # how often the driver looks at finished jobs, events and Ctrl-C
ATTEMPTS = 2  # a job whose worker died (or that failed for a reason not its input) is retried once


# --- shards ------------------------------------------------------------------------------


def parse_shard(text: str) -> tuple[int, int]:
    """ "I/N" (1 <= I <= N) -> (I, N)."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard '{text}' is not I/N (e.g. 2/8, I from 1 to N)") from None
    if not 1 <= index <= count:
        raise UsageError(f"--shard {text}: I must be from 1 to N (e.g. 1/{max(count, 1)})")
    return index, count


def shard_of(items: list[T], index: int, count: int) -> list[T]:
    """Shard `index` of `count` (1-based) of the manifest's entries, by their place in it: N
    processes given 1/N .. N/N cover every entry exactly once, whatever else they do."""
    return [item for k, item in enumerate(items) if k % count == index - 1]


# --- Ray ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RaySpec:
    """Where and how wide: `address` ("auto", "HOST:PORT", or None for a local cluster),
    GPUs per worker (0: CPU workers), and at most `workers` actors (None: one per slot)."""

    address: str | None = None
    gpus_per_worker: float = 1.0
    workers: int | None = None


def import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError(
            "--executor ray needs Ray: pip install 'fpk[ray]' (or pip install ray)"
        ) from None
    return ray


@dataclass(frozen=True)
class Models:
    """What a worker loads (each worker once)."""

    preset: Preset
    weights_dir: Path | None
    device: str | None
    dtype: str | None
    device_options: Any = None  # fpk.model.offload.DeviceOptions


class Worker:
    """A Ray actor: the models, loaded once; `run` takes one job at a time."""

    def __init__(self, models: Models, queue: Any, name: str) -> None:
        from fpk.run.batch import load_runtime

        self.queue, self.name = queue, name
        t0 = time.perf_counter()
        self.runtime = load_runtime(models.preset, models.weights_dir, models.device,
                                    models.dtype, self.emit, models.device_options)  # fmt: skip
        self.emit(ev.Loaded("", round(time.perf_counter() - t0, 3)))

    def emit(self, event: ev.Event) -> None:
        self.queue.put(ev.on_worker(event, self.name))

    def where(self) -> tuple[str, int]:
        return socket.gethostname(), os.getpid()

    def run(self, job: JobSpec, n: int, total: int, preview: bool, overwrite: bool) -> Outcome:
        progress = ev.Progress(self.emit, None, n, total, preview)
        return run_claimed(run_any, self.runtime, job, progress, overwrite)


def run_on_ray(
    spec: RaySpec,
    planned: list[Planned],
    models: Models,
    sink: ev.EventSink = ev.ignore,
    should_stop: Callable[[], bool] | None = None,
    overwrite: bool = False,
    preview: bool = False,
) -> list[Outcome]:
    """The batch on Ray workers; outcomes in manifest order, as `run_batch` gives them."""
    outcomes, todo = triage(planned, sink, overwrite)
    if not todo:
        return [outcomes[i] for i in sorted(outcomes)]
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=spec.address, include_dashboard=False, log_to_driver=False,
                 num_cpus=spec.workers if spec.address is None else None)  # fmt: skip
    try:
        pool = _Pool(ray, spec, models, len(todo), sink)
        outcomes.update(pool.run(todo, should_stop, overwrite, preview))
    finally:
        if started:
            ray.shutdown()
    return [outcomes[i] for i in sorted(outcomes)]


class _Pool:
    """The driver's side: actors, the jobs in flight, retries, and the events' queue."""

    def __init__(self, ray, spec: RaySpec, models: Models, jobs: int, sink: ev.EventSink):
        from ray.util.queue import Queue

        self.ray, self.sink, self.queue = ray, sink, Queue()
        resources = ray.cluster_resources()
        count = min(jobs, worker_count(resources, spec))
        gpus = spec.gpus_per_worker if resources.get("GPU", 0.0) > 0 else 0
        actor = ray.remote(Worker).options(num_cpus=1, num_gpus=gpus, max_restarts=0)
        names = [f"w{k + 1}" for k in range(count)]
        self.actors = {name: actor.remote(models, self.queue, name) for name in names}
        places = ray.get([a.where.remote() for a in self.actors.values()])
        for name, (host, pid) in zip(names, places, strict=True):
            sink(ev.WorkerStarted("", name, host, pid))

    def run(self, todo, should_stop, overwrite: bool, preview: bool) -> dict[int, Outcome]:
        pending = sorted(todo, key=lambda item: -item[1].frames)  # longest first
        idle = list(self.actors)
        running: dict[Any, tuple[str, int, JobSpec]] = {}
        tried: dict[int, list[str]] = {}
        done: dict[int, Outcome] = {}
        n = 0
        while pending or running:
            while idle and pending:
                k = _next_for(pending, tried, idle)
                if k is None:
                    break
                i, job = pending.pop(k)
                name = idle.pop(0) if not tried.get(i) else _other(idle, tried[i])
                tried.setdefault(i, []).append(name)
                n += 1
                ref = self.actors[name].run.remote(job, n, len(todo), preview, overwrite)
                running[ref] = (name, i, job)
            ready, _ = self.ray.wait(list(running), num_returns=1, timeout=POLL_SECONDS)
            self._drain()
            if should_stop is not None and should_stop():
                self._stop()
            for ref in ready:
                name, i, job = running.pop(ref)
                outcome, alive = self._result(ref, name, job)
                if alive:
                    idle.append(name)
                if _retry(outcome, tried[i], self.actors):
                    pending.insert(0, (i, job))
                else:
                    done[i] = outcome
            pending = _feasible(pending, self.actors, done)
        self._drain()
        return done

    def _result(self, ref, name: str, job: JobSpec) -> tuple[Outcome, bool]:
        from ray.exceptions import RayActorError

        try:
            return self.ray.get(ref), True
        except RayActorError:
            self.actors.pop(name, None)
            self.sink(ev.on_worker(ev.Message(job.name, f"worker {name} died"), name))
            return Outcome(job.name, "failed", f"worker {name} died running it"), False

    def _drain(self) -> None:
        while not self.queue.empty():
            self.sink(self.queue.get())

    def _stop(self) -> None:
        from fpk.sampling.solvers import Cancelled

        for actor in self.actors.values():
            self.ray.kill(actor)  # finished sections are on disk: a rerun resumes
        raise Cancelled


def worker_count(resources: dict[str, float], spec: RaySpec) -> int:
    """One worker per `gpus_per_worker` GPUs of the cluster, or per CPU where it has no GPU
    (or GPUs are not asked for); at most `spec.workers`; at least one."""
    gpus = resources.get("GPU", 0.0)
    if spec.gpus_per_worker > 0 and gpus > 0:
        slots = int(gpus // spec.gpus_per_worker)
    else:
        slots = int(resources.get("CPU", 1.0))
    if spec.workers is not None:
        slots = min(slots, spec.workers)
    return max(1, slots)


def _retry(outcome: Outcome, tried: list[str], actors: dict[str, Any]) -> bool:
    """Once more on another worker, if the job failed for a reason other than its input and
    another worker is alive."""
    if outcome.status != "failed" or outcome.code == 2 or len(tried) >= ATTEMPTS:
        return False
    return any(name not in tried for name in actors)


def _next_for(pending, tried, idle) -> int | None:
    """The first pending job one of the idle workers may take (a retry: not its last one)."""
    for k, (i, _) in enumerate(pending):
        if not tried.get(i) or any(name not in tried[i] for name in idle):
            return k
    return None


def _other(idle: list[str], tried: list[str]) -> str:
    name = next(n for n in idle if n not in tried)
    idle.remove(name)
    return name


def _feasible(pending, actors, done) -> list:
    """Pending jobs that some live worker can still take; the others are reported failed."""
    if actors:
        return pending
    for i, job in pending:
        done[i] = Outcome(job.name, "failed", "no Ray worker left to run it")
    return []
