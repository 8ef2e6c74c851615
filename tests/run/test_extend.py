"""`fpk extend` on tiny random components: frame counts, the kept source, odd sources,
generate -> extend -> extend, reverse, and bad clips."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from fpk.media.video import read_video

from ..test_cli import run

FAST = ["--steps", "2", "--window", "2"]


def write_clip(path: Path, frames: np.ndarray, fps: float = 30, rotation: int = 0, crf: int = 0):
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        if rotation:
            stream.set_display_rotation(rotation)
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())
    return path


def moving_square(n: int, h: int = 64, w: int = 64) -> np.ndarray:
    frames = np.full((n, h, w, 3), 30, np.uint8)
    for i in range(n):
        x = (2 * i) % (w - 16)
        frames[i, 20:36, x : x + 16] = (220, 60, 40)
    return frames


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def extend(capsys, weights, out, *args):
    return run(capsys, "extend", "--weights", str(weights), "--out", str(out), "--quiet", *args)


def test_extend_3s_by_5s_keeps_source(capsys, tiny_saved, tmp_path):
    _, _, weights = tiny_saved
    clip = write_clip(tmp_path / "clip.mp4", moving_square(90))
    source, _, _ = read_video(clip)
    code, _, err = extend(capsys, weights, tmp_path / "o", str(clip), "--prompt", "a red square",
                          "--len", "5s", "--crf", "0", "--name", "x", *FAST)  # fmt: skip
    assert code == 0, err
    frames, _, fps = read_video(tmp_path / "o" / "x.mp4")
    assert frames.shape[0] == 90 + 150 and fps == 30
    # before the seam: the source's decoded yuv420p frames re-encoded as they are: lossless
    assert np.array_equal(frames[:82], source[:82])
    side = json.loads((tmp_path / "o" / "x.json").read_text())
    assert (side["source_frames"], side["new_frames"], side["frames"]) == (90, 150, 240)


def test_no_keep_source_and_odd_source(capsys, tiny_saved, tmp_path):
    """24 fps, 4:3, rotated 90 degrees: 30 fps out, at the bucket of the displayed shape."""
    _, _, weights = tiny_saved
    clip = write_clip(tmp_path / "odd.mp4", moving_square(48, 48, 64), fps=24, rotation=90)
    code, _, err = extend(capsys, weights, tmp_path / "o", str(clip), "--no-keep-source",
                          "--len", "1s", "--name", "y", *FAST)  # fmt: skip
    assert code == 0, err
    frames, tags, fps = read_video(tmp_path / "o" / "y.mp4")
    assert fps == 30 and frames.shape[0] == 30
    assert "description" not in tags and "fpk_prompt" not in tags  # no prompt: no empty tags
    assert tags["fpk_source"] == "odd.mp4"
    assert frames.shape[1] > frames.shape[2]  # portrait: 48x64 shown rotated is 64 tall


def test_generate_then_extend_twice(capsys, tiny_saved, tmp_path):
    from PIL import Image

    _, _, weights = tiny_saved
    Image.fromarray(moving_square(1)[0]).save(tmp_path / "a.png")
    out = tmp_path / "o"
    common = ["--weights", str(weights), "--out", str(out), "--quiet", *FAST]
    assert run(capsys, "generate", "--image", str(tmp_path / "a.png"), "--len", "1s",
               "--name", "g0", "--crf", "0", *common)[0] == 0  # fmt: skip
    assert run(capsys, "extend", str(out / "g0.mp4"), "--len", "0.5s", "--name", "g1",
               "--crf", "0", *common)[0] == 0  # fmt: skip
    assert run(capsys, "extend", str(out / "g1.mp4"), "--len", "2s", "--name", "g2",
               "--crf", "0", *common)[0] == 0  # fmt: skip
    g0, g1, g2 = (read_video(out / f"g{i}.mp4")[0] for i in range(3))
    assert (len(g0), len(g1), len(g2)) == (30, 45, 105)
    # continuous: each prefix is the previous video, copied losslessly (CRF 0)
    assert np.array_equal(g1[:22], g0[:22]) and np.array_equal(g2[:37], g1[:37])


def test_reverse(capsys, tiny_saved, tmp_path):
    _, _, weights = tiny_saved
    clip = write_clip(tmp_path / "clip.mp4", moving_square(30))
    source, _, _ = read_video(clip)
    code, _, err = extend(capsys, weights, tmp_path / "o", str(clip), "--reverse", "--len", "1s",
                          "--crf", "0", "--name", "r", *FAST)  # fmt: skip
    assert code == 0, err
    frames, _, _ = read_video(tmp_path / "o" / "r.mp4")
    assert frames.shape[0] == 60
    assert np.array_equal(frames[38:], source[8:])  # after the seam: the source untouched


def _ten_hours(path: Path) -> Path:
    """Two frames ten hours apart: the header says 10 h; nothing long to encode."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=1)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, 1)
        for pts in (0, 36_000):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                           layout="mono")  # fmt: skip
        frame.sample_rate = 16000
        out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: (p.write_bytes(b""), p)[1], "empty (0 bytes)"),
        (lambda p: (p.write_text("hello"), p)[1], "not a video file"),
        (_audio_only, "no video stream"),
        (lambda p: p, "no such file"),
        (_ten_hours, "10.0 h long"),
    ],
    ids=["zero-bytes", "text", "audio-only", "missing", "ten-hours"],
)
def test_bad_clips(capsys, tiny_saved, tmp_path, make, needle):
    _, _, weights = tiny_saved
    clip = make(tmp_path / "clip.mp4")
    code, _, err = extend(capsys, weights, tmp_path / "o", str(clip), "--len", "1s")
    assert code in (1, 2) and needle in err and len(err.strip().splitlines()) == 1, err
    assert not list((tmp_path / "o").glob("*.mp4")) if (tmp_path / "o").exists() else True


def test_clip_with_no_frames(capsys, tiny_saved, tmp_path):
    _, _, weights = tiny_saved
    clip = tmp_path / "empty.mp4"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
    code, _, err = extend(capsys, weights, tmp_path / "o", str(clip), "--len", "1s")
    assert code in (1, 2) and len(err.strip().splitlines()) == 1, err
