"""A full disk (a file size limit) and an output folder turned read-only mid-run: one line
naming the problem and the fix, exit code 1, nothing at a final path, no partial file left,
and the finished sections kept, so that the rerun samples none again."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ..procs import fpk_env, run_fpk
from .killpoint import set_read_only

KILLER = Path(__file__).with_name("killpoint.py")
FILE_LIMIT = 60_000  # bytes: a section's latents (33 KB) and the sidecar fit, the mp4 does not
JOB = [
    "--len",
    "3s",
    "--steps",
    "2",
    "--window",
    "2",
    "--crf",
    "0",
    "--name",
    "job",
    "--no-preview",
]


@pytest.fixture
def noise_image(tmp_path) -> Path:
    rng = np.random.default_rng(5)
    path = tmp_path / "noise.png"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    return path


def limit_file_size() -> None:
    """In the child: writes past FILE_LIMIT fail with EFBIG (not the default SIGXFSZ kill)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))


def assert_failed_cleanly(done: subprocess.CompletedProcess, out: Path, problem: str) -> None:
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"fpk: error: cannot write {out / 'job.mp4'}: {problem}")
    assert "run the same command again to resume" in lines[0]
    assert sorted(p.name for p in out.iterdir()) == [".fpk-work"]  # no mp4, json or partial
    kept = list((out / ".fpk-work" / "job").glob("section_*.safetensors"))
    assert len(kept) == 12  # 3 s in sections of 2 latent frames: all finished before the write


def assert_rerun_resumes(args: list[str]) -> None:
    rerun = run_fpk(*args, "--json")
    assert rerun.returncode == 0, rerun.stderr
    events = [json.loads(line) for line in rerun.stdout.splitlines()]
    assert not [e for e in events if e["event"] == "SectionStarted"]  # nothing sampled again


def generate_args(tiny_saved, image: Path, out: Path) -> list[str]:
    _, _, weights = tiny_saved
    return ["generate", "--weights", str(weights), "--out", str(out), "--image", str(image), *JOB]


def test_disk_full(tiny_saved, noise_image, tmp_path):
    out = tmp_path / "out"
    args = generate_args(tiny_saved, noise_image, out)
    full = run_fpk(*args, "--quiet", preexec_fn=limit_file_size)
    assert_failed_cleanly(full, out, "the file outgrew the size limit; raise it (ulimit -f)")
    assert_rerun_resumes(args)


def test_output_folder_turns_read_only(tiny_saved, noise_image, tmp_path):
    out = tmp_path / "out"
    args = generate_args(tiny_saved, noise_image, out)
    cmd = [sys.executable, str(KILLER), "readonly:1", *args, "--quiet"]
    try:
        done = subprocess.run(cmd, env=fpk_env(), capture_output=True, text=True, timeout=600)
    finally:
        set_read_only(out, False)
    assert_failed_cleanly(done, out, "permission denied; make the folder writable")
    assert_rerun_resumes(args)
