"""SIGKILL a batch at chosen points (mid-section, mid-mp4, mid-sidecar, between renames), then
rerun it: nothing half-written is ever at a final path, the rerun finishes, its outputs equal an
uninterrupted run's, and each kill costs at most the one section it interrupted.

The batch: text to video, an image with an end image, and an extension of a clip.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ..procs import (
    FAST,
    assert_playable_or_absent,
    assert_same_outputs,
    fpk_env,
    run_fpk,
    write_manifest,
)
from .test_extend import moving_square, write_clip

NAMES = ["t2v", "ends", "ext"]
KILLER = Path(__file__).with_name("killpoint.py")

# Over the batch (26 transformer calls, 13 saved latents, 10 frame batches, 3 mp4s, 3 sidecars):
# t2v's start frame and sections, then ends' sections, then ext's.
KILL_POINTS = [
    "model:1",  # t2v's start frame, first step
    "section:1",  # t2v's start frame written, not yet renamed
    "model:6",  # mid t2v
    "section:4",  # a t2v section written, not yet renamed
    "frames:2",  # mid t2v.mp4
    "mp4:1",  # t2v.mp4 complete, not yet renamed
    "sidecar:1",  # half of t2v.json written
    "json+:1",  # t2v.json renamed, its sections not yet removed
    "model:15",  # mid ends
    "mp4+:2",  # ends.mp4 renamed, no sidecar yet
    "section:11",  # an ext section written, not yet renamed
    "frames:9",  # mid ext.mp4
    "sidecar:3",  # half of ext.json written
    "json:3",  # ext.json complete, not yet renamed
]
FAST_POINT = "sidecar:1"  # the default run's case: a kill mid-sidecar


@pytest.fixture(scope="module")
def batch(tiny_saved, tmp_path_factory):
    """(manifest, weights, the uninterrupted run's folder, sections it sampled)."""
    _, _, weights = tiny_saved
    folder = tmp_path_factory.mktemp("killbatch")
    rng = np.random.default_rng(3)
    for name in ("start.png", "end.png"):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / name)
    write_clip(folder / "clip.mp4", moving_square(30))
    manifest = write_manifest(folder / "jobs.toml", [
        {"name": "t2v", "prompt": "a red circle moves", "len": "1s", **FAST},
        {"name": "ends", "image": "start.png", "end_image": "end.png", "prompt": "a blue square",
         "len": "1s", **FAST},
        {"name": "ext", "video": "clip.mp4", "prompt": "the square goes on", "len": "1s", **FAST},
    ])  # fmt: skip
    reference = folder / "reference"
    done = run_fpk(*_args(manifest, weights, reference))
    assert done.returncode == 0, done.stderr
    return manifest, weights, reference, _sampled(done.stdout)


def _args(manifest: Path, weights: Path, out: Path) -> list[str]:
    return ["generate", "--manifest", str(manifest), "--weights", str(weights), "--out", str(out),
            "--json"]  # fmt: skip


def _sampled(stdout: str) -> int:
    """Sections sampled (not loaded from disk) by a run, from its --json events."""
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return sum(e["event"] == "SectionStarted" for e in events)


def kill_and_resume(batch, out: Path, point: str) -> None:
    manifest, weights, reference, sampled = batch
    env = {**fpk_env(), "PYTHONUNBUFFERED": "1"}  # every event before the kill reaches us
    cmd = [sys.executable, str(KILLER), point, *_args(manifest, weights, out)]
    killed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, f"{point} was never reached: {killed.stderr}"
    assert_playable_or_absent(out)
    rerun = run_fpk(*_args(manifest, weights, out))
    assert rerun.returncode == 0, rerun.stderr
    assert_same_outputs(out, reference, NAMES)
    assert _sampled(killed.stdout) + _sampled(rerun.stdout) <= sampled + 1
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in reference.iterdir())


def test_kill_mid_sidecar_then_resume(batch, tmp_path):
    kill_and_resume(batch, tmp_path / "out", FAST_POINT)


@pytest.mark.slow
@pytest.mark.parametrize("point", [p for p in KILL_POINTS if p != FAST_POINT])
def test_kill_anywhere_then_resume(batch, tmp_path, point):
    kill_and_resume(batch, tmp_path / "out", point)
