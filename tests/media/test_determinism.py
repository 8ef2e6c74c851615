"""The same input gives the same bytes: the mp4 writer alone, and a whole job run twice."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fpk.media.video import VideoWriter

from ..procs import FAST, run_fpk, sidecar_core, write_manifest


def soft_disc(n: int = 30, size: int = 64) -> np.ndarray:
    """A moving soft disc on a gradient with mild noise: content on which libx264's
    alignment-dependent assembly chose differently from one write to the next."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    frames = []
    for i in range(n):
        disc = np.clip(10 - np.hypot(x - 16 - i, y - 40 + i / 2), 0, 1)
        img = np.stack([disc * 220 + x, y * 2, 40 + disc * 30], -1)
        noise = np.random.default_rng(i).normal(0, 3, img.shape)
        frames.append(np.clip(img + noise, 0, 255).astype(np.uint8))
    return np.stack(frames)


@pytest.mark.parametrize("size, repeats", [(64, 12), (256, 6)], ids=["assembly", "threads"])
def test_writer_gives_one_file_for_the_same_frames(tmp_path, size, repeats):
    """64x64: libx264's alignment-dependent assembly; 256x256: its frame threads."""
    frames = soft_disc(30, size)
    digests = set()
    for i in range(repeats):
        path = tmp_path / f"v{i}.mp4"
        with VideoWriter(path, 30, size, size, crf=16, tags={"fpk_seed": "1"}) as writer:
            writer.write(frames[:7])  # batches of any size: the same stream
            writer.write(frames[7:])
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1


def test_baseline_assembly_writes_the_bytes_of_plain_c(tmp_path, monkeypatch):
    """The x86-64 baseline assembly fpk lets libx264 use changes no byte against plain C."""
    from fpk.media import video

    frames = soft_disc(30, 64)
    digests = []
    for i, params in enumerate((video.X264_PARAMS, video.X264_PARAMS.replace(video.X264_ASM, "0"))):
        monkeypatch.setattr(video, "X264_PARAMS", params)
        path = tmp_path / f"v{i}.mp4"
        with VideoWriter(path, 30, 64, 64, crf=16) as writer:
            writer.write(frames)
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_job_run_twice_gives_identical_bytes(tiny_saved, tmp_path):
    _, _, weights = tiny_saved
    manifest = write_manifest(tmp_path / "jobs.toml", [
        {"name": "t2v", "prompt": "a red circle moves", "len": "1s", **FAST},
        {"name": "img", "image": "img.png", "prompt": "a blue square", "len": "1s", **FAST},
    ])  # fmt: skip
    from PIL import Image

    Image.fromarray(soft_disc(1)[0]).save(tmp_path / "img.png")
    runs = [tmp_path / "a", tmp_path / "b"]
    for out in runs:
        done = run_fpk("generate", "--manifest", str(manifest), "--weights", str(weights),
                       "--out", str(out), "--quiet")  # fmt: skip
        assert done.returncode == 0, done.stderr
    for name in ("t2v", "img"):
        a, b = (out / f"{name}.mp4" for out in runs)
        assert a.read_bytes() == b.read_bytes(), name
        assert sidecar_core(a.with_suffix(".json")) == sidecar_core(b.with_suffix(".json"))
