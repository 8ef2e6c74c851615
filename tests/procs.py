"""Running fpk as a separate process (as users do) and comparing what two runs wrote.

Shared by the tests that kill, race, starve or repeat whole runs: determinism, locks,
kill-and-resume, full disks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from fpk.media.video import read_video

FAST = {"steps": 2, "window": 2}  # manifest keys: the shortest useful job
TIMING_KEYS = ("section_seconds", "seconds")  # differ run to run by nature


def fpk_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "fpk.cli", *args]


def fpk_env() -> dict[str, str]:
    """No hub access, one torch thread (the runs of a test share two cores)."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def run_fpk(*args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        fpk_command(*args), env=fpk_env(), capture_output=True, text=True, timeout=timeout,
        **kwargs,
    )  # fmt: skip


def write_manifest(path: Path, jobs: list[dict]) -> Path:
    """A TOML manifest of `jobs` (values: str, int or float)."""
    lines = []
    for job in jobs:
        lines.append("[[job]]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in job.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def sidecar_core(path: Path) -> dict:
    """A sidecar without what legitimately differs between two runs: timings, the folder."""
    data = json.loads(path.read_text())
    for key in TIMING_KEYS:
        data.pop(key)
    data["job"].pop("out")
    return data


def assert_same_outputs(out: Path, reference: Path, names: list[str]) -> None:
    """Each job's decoded frames and sidecar (timings aside) equal the reference run's."""
    for name in names:
        got, _, _ = read_video(out / f"{name}.mp4")
        want, _, _ = read_video(reference / f"{name}.mp4")
        assert np.array_equal(got, want), name
        assert sidecar_core(out / f"{name}.json") == sidecar_core(reference / f"{name}.json")


def assert_playable_or_absent(out: Path) -> None:
    """Nothing at a final path is truncated: every mp4 decodes to its sidecar's frame count."""
    for video in final_paths(out, ".mp4"):
        side = video.with_suffix(".json")
        frames, _, _ = read_video(video)
        if side.exists():
            assert frames.shape[0] == json.loads(side.read_text())["frames"], video.name
    for side in final_paths(out, ".json"):
        json.loads(side.read_text())  # complete JSON, never half a file


def final_paths(out: Path, suffix: str) -> list[Path]:
    """Files of `out` with `suffix`, hidden ones (partial files) aside."""
    return [p for p in out.glob(f"*{suffix}") if not p.name.startswith(".")]
