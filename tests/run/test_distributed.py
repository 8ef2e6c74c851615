"""Batches beyond one process: shards for array jobs, and a manifest on a local Ray cluster
(2 CPU workers) giving the single-process outputs, also when a worker is killed mid-job."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fpk import events as ev
from fpk.errors import UsageError
from fpk.media.video import read_video
from fpk.run.distributed import RaySpec, parse_shard, shard_of, worker_count

from ..test_cli import run

JOBS = 6
# the sidecar's figures that differ between runs of the same job: timings and places
VARYING = ("section_seconds", "seconds", "weights")


@pytest.mark.parametrize("count", range(1, 9))
@pytest.mark.parametrize("items", [0, 1, 5, 17])
def test_shards_cover_every_entry_once(items, count):
    entries = list(range(items))
    shards = [shard_of(entries, i, count) for i in range(1, count + 1)]
    assert sorted(x for s in shards for x in s) == entries
    assert all(s == sorted(s) for s in shards)  # manifest order kept within a shard


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "a/b", "1/0", "-1/2"])
def test_bad_shards_say_what_they_expect(text):
    with pytest.raises(UsageError, match="--shard"):
        parse_shard(text)


@pytest.mark.parametrize(
    "resources, spec, expected",
    [
        ({"CPU": 16.0, "GPU": 8.0}, RaySpec(gpus_per_worker=1), 8),
        ({"CPU": 16.0, "GPU": 8.0}, RaySpec(gpus_per_worker=2), 4),
        ({"CPU": 16.0, "GPU": 8.0}, RaySpec(gpus_per_worker=0), 16),
        ({"CPU": 2.0}, RaySpec(gpus_per_worker=1), 2),
        ({"CPU": 2.0}, RaySpec(workers=1), 1),
        ({"CPU": 0.5}, RaySpec(), 1),
    ],
)
def test_one_worker_per_gpu_or_cpu_slot(resources, spec, expected):
    assert worker_count(resources, spec) == expected


def test_shard_needs_a_manifest(capsys):
    code, _, err = run(capsys, "generate", "--shard", "1/2")
    assert code == 2 and "--shard splits a manifest" in err


def test_without_ray_the_executor_says_how_to_install_it(capsys, monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as if not installed
    manifest = tmp_path / "jobs.toml"
    manifest.write_text('[[job]]\nlen = "10f"\n')
    code, _, err = run(capsys, "generate", "--manifest", str(manifest), "--executor", "ray")
    assert code == 2 and "pip install 'fpk[ray]'" in err and "Traceback" not in err


def _entries(folder: Path) -> list[dict]:
    image = folder / "start.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8)).save(image)
    return [
        {
            "name": f"j{k}",
            "image": str(image),
            "len": f"{10 + 2 * k}f",
            "seed": k,
            "steps": 2,
            "window": 2,
            "crf": 0,
        }  # fmt: skip
        for k in range(JOBS)
    ]


def _same_outputs(a: Path, b: Path) -> None:
    for k in range(JOBS):
        fa, _, _ = read_video(a / f"j{k}.mp4")
        fb, _, _ = read_video(b / f"j{k}.mp4")
        assert np.array_equal(fa, fb), k
        sa, sb = (json.loads((d / f"j{k}.json").read_text()) for d in (a, b))
        for side in (sa, sb):
            side["job"].pop("out")
            for key in VARYING:
                side.pop(key)
        assert sa == sb


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def sharded(tiny_saved, tmp_path_factory):
    """The single-process outputs, made as three shards: each job once. One torch thread, as
    each 1-CPU Ray worker has: CPU float reductions split by thread count differ in the last
    bits (seen: up to 3/255 on 0.003 % of the pixels between 1 and 2 threads)."""
    import torch

    from fpk.config import load_preset
    from fpk.run import batch

    _, _, weights = tiny_saved
    folder = tmp_path_factory.mktemp("sharded")
    entries = _entries(folder)
    names = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i in (1, 2, 3):
            outcomes = batch.generate(load_preset("tiny"), entries, {}, folder / "out",
                                      weights_dir=weights, shard=(i, 3))  # fmt: skip
            assert all(o.status == "done" for o in outcomes)
            names += [o.name for o in outcomes]
    finally:
        torch.set_num_threads(threads)
    assert sorted(names) == [f"j{k}" for k in range(JOBS)]  # every job once
    return entries, folder / "out"


def test_ray_gives_the_single_process_outputs(cluster, tiny_saved, sharded, tmp_path):
    from fpk.config import load_preset
    from fpk.run import batch

    _, _, weights = tiny_saved
    entries, single = sharded
    seen: list[ev.Event] = []
    outcomes = batch.generate(load_preset("tiny"), entries, {}, tmp_path, weights_dir=weights,
                              sink=seen.append, ray=RaySpec(gpus_per_worker=0))  # fmt: skip
    assert [o.name for o in outcomes] == [f"j{k}" for k in range(JOBS)]  # manifest order
    assert all(o.status == "done" for o in outcomes)
    _same_outputs(single, tmp_path)
    workers = {ev.worker_of(e) for e in seen if isinstance(e, ev.JobDone)}
    assert workers == {"w1", "w2"}  # both took jobs
    started = [e.job for e in seen if isinstance(e, ev.JobStarted)]
    assert started[:2] == ["j5", "j4"] or started[:2] == ["j4", "j5"]  # longest first
    line = next(e for e in seen if isinstance(e, ev.StepDone)).as_dict()
    assert line["worker"] in ("w1", "w2")  # the --json events carry the worker


def test_a_killed_worker_s_job_completes_elsewhere_from_its_sections(
    cluster, tiny_saved, sharded, tmp_path
):
    from fpk.config import load_preset
    from fpk.run import batch

    _, _, weights = tiny_saved
    entries, single = sharded
    pids: dict[str, int] = {}
    seen: list[ev.Event] = []
    killed: list[str] = []

    def sink(e: ev.Event) -> None:
        seen.append(e)
        if isinstance(e, ev.WorkerStarted):
            pids[e.worker] = e.pid
        # j5 (the longest, taken first) loses its worker once a section of it is on disk
        if isinstance(e, ev.SectionDone) and e.job == "j5" and not killed:
            killed.append(ev.worker_of(e))
            os.kill(pids[killed[0]], signal.SIGKILL)

    outcomes = batch.generate(load_preset("tiny"), entries, {}, tmp_path, weights_dir=weights,
                              sink=sink, ray=RaySpec(gpus_per_worker=0))  # fmt: skip
    assert killed and all(o.status == "done" for o in outcomes), outcomes
    _same_outputs(single, tmp_path)  # nothing lost, nothing different
    starts = [e for e in seen if isinstance(e, ev.JobStarted) and e.job == "j5"]
    assert len(starts) == 2 and ev.worker_of(starts[1]) != killed[0]
    assert starts[1].resumed_sections >= 1  # from its finished sections
