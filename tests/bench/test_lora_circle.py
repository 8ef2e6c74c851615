"""benchmarks/lora_circle.py's scoring against the world's ground truth: the truth itself
follows and circles in phase; a still object and a late one do not."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from fpk.media.video import VideoWriter
from fpk.synthetic import world

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "lora_circle.py"


def _lora_circle():
    spec = importlib.util.spec_from_file_location("lora_circle", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _video(path: Path, frames: np.ndarray) -> Path:
    writer = VideoWriter(path, world.FPS, world.SIZE, world.SIZE, crf=0)
    writer.write(frames)
    writer.close()
    return path


def test_the_truth_follows_in_phase_and_a_still_or_late_object_does_not(tmp_path):
    score = _lora_circle().score
    scene = world.circling_scene(world.HELD_OUT)
    truth = world.render(scene, 121)
    got = score(_video(tmp_path / "truth.mp4", truth), scene)
    assert got["follows"] and got["circles"] and abs(got["lag_frames"]) <= 0.5, got
    assert abs(got["turns"] - 3.0) < 0.1
    still = score(_video(tmp_path / "still.mp4", np.repeat(truth[:1], 121, 0)), scene)
    assert not still["circles"] and still["lag_frames"] > 50 and abs(still["turns"]) < 0.1
    late = np.concatenate([np.repeat(truth[:1], 5, 0), truth[:116]])  # starts 5 frames late
    behind = score(_video(tmp_path / "late.mp4", late), scene)
    assert behind["circles"] and 4 <= behind["lag_frames"] <= 6, behind  # in the motion, late
