"""mp4 writing: frame count, tags, atomic publication, refusals."""

from __future__ import annotations

import os

import numpy as np
import pytest

from fpk.errors import UsageError
from fpk.media.video import VideoWriter, check_writable, partial_path, read_video


def _frames(n, h=32, w=48):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    return np.stack([np.roll(base, i, axis=1) for i in range(n)])


def test_writes_exact_frames_and_tags(tmp_path):
    path = tmp_path / "v.mp4"
    with VideoWriter(
        path, 30, 48, 32, crf=0, tags={"comment": {"prompt": "a cat", "seed": 7}}
    ) as w:
        w.write(_frames(10)[:4])
        assert not path.exists() and partial_path(path).exists()  # never half-written
        w.write(_frames(10)[4:])
    frames, tags, fps = read_video(path)
    assert frames.shape == (10, 32, 48, 3) and fps == 30
    assert '"seed": 7' in tags["comment"]
    assert not partial_path(path).exists()


def test_failure_leaves_nothing(tmp_path):
    path = tmp_path / "v.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(path, 30, 48, 32) as w:
            w.write(_frames(3))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_refusals(tmp_path):
    with pytest.raises(UsageError, match="even"):
        VideoWriter(tmp_path / "v.mp4", 30, 47, 32)
    with pytest.raises(UsageError, match="--crf"):
        VideoWriter(tmp_path / "v.mp4", 30, 48, 32, crf=60)
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    if os.geteuid() != 0:  # root writes anywhere; the check is for ordinary users
        with pytest.raises(UsageError, match="not writable"):
            check_writable(locked)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="cannot create"):
        check_writable(tmp_path / "file" / "sub")
