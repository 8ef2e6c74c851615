"""Writing and reading mp4 with PyAV: H.264, yuv420p, CRF, written atomically.

Frames go to a hidden temporary file beside the output and are renamed into place only when
the video is complete, so a final path never holds a half-written file.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from fpk.errors import OutputError, UsageError, writing

# libx264 is not bit-exact from run to run here: its assembly picks code paths by the memory
# alignment of its buffers (the Cache64 routines), and its frame and slice threads change its
# decisions too; the same frames gave different bytes, now and then different pixels. One
# thread is the same every time, with the assembly limited to the baseline every x86-64 CPU
# has (MMX2, SSE, SSE2: the same bytes as plain C, at less than half its time); plain C
# elsewhere (tests/media/test_determinism.py).
X264_ASM = "MMX2,SSE,SSE2" if platform.machine().lower() in ("x86_64", "amd64") else "0"
X264_PARAMS = f"asm={X264_ASM}:threads=1:sliced-threads=0:lookahead-threads=1"


def check_writable(folder: Path) -> None:
    """Raise UsageError unless `folder` exists (or can be made) and accepts files."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"--out {folder}: cannot create the folder ({err.strerror})") from None
    probe = folder / f".fpk-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UsageError(
            f"--out {folder}: the folder is not writable ({err.strerror}); choose another --out"
        ) from None


def partial_path(path: Path) -> Path:
    """Where this process writes `path` before renaming it into place (hidden, its own)."""
    return path.with_name(f".{path.name}.{os.getpid()}.partial{path.suffix}")


@contextmanager
def publishing(path: Path) -> Iterator[Path]:
    """A partial path to write `path` at: renamed into place if the block succeeds, removed if
    it fails (an OSError becomes one OutputError line)."""
    tmp = partial_path(path)
    try:
        with writing(path):
            yield tmp
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_partials(path: Path) -> None:
    """Remove what any process left half-written of `path` (call holding the job's lock)."""
    for stale in path.parent.glob(f".{path.name}.*.partial{path.suffix}"):
        stale.unlink(missing_ok=True)


class VideoWriter:
    """Append uint8 frames (H, W, 3) as they become final; `close()` publishes the file."""

    def __init__(
        self,
        path: Path,
        fps: int,
        width: int,
        height: int,
        crf: int = 16,
        tags: dict[str, Any] | None = None,
    ) -> None:
        import av

        if width % 2 or height % 2:
            raise UsageError(f"video size {width}x{height} must be even for yuv420p")
        if not 0 <= crf <= 51:
            raise UsageError(f"--crf must be between 0 and 51, got {crf}")
        self.path = path
        self.tmp = partial_path(path)
        self.frames = 0
        with writing(path):
            self._container = av.open(
                str(self.tmp), mode="w", format="mp4", options={"movflags": "use_metadata_tags"}
            )
        for key, value in (tags or {}).items():
            self._container.metadata[key] = value if isinstance(value, str) else json.dumps(value)
        self._fps = fps
        self._stream = self._container.add_stream("libx264", rate=Fraction(fps))
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(crf), "x264-params": X264_PARAMS}

    def write(self, frames: np.ndarray) -> None:
        """Frames (F, H, W, 3) or (H, W, 3), uint8 RGB."""
        import av

        batch = frames[None] if frames.ndim == 3 else frames
        for frame in batch:
            out = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            # explicit timestamps at the stream's rate (x264's rate control reads them)
            out.pts, out.time_base = self.frames, Fraction(1, self._fps)
            with writing(self.path):
                self._container.mux(self._stream.encode(out))
            self.frames += 1

    def write_frame(self, frame) -> None:
        """A decoded av.VideoFrame of this size, re-encoded as it is (yuv420p: no colour
        conversion, so lossless at CRF 0)."""
        frame.pts = None
        frame.time_base = Fraction(1, self._fps)  # the source's time base would be refused
        with writing(self.path):
            self._container.mux(self._stream.encode(frame))
        self.frames += 1

    def close(self) -> Path:
        """Flush, close and rename into place; where that fails, nothing is left."""
        try:
            with writing(self.path):
                self._container.mux(self._stream.encode())  # flush
                self._container.close()
                os.replace(self.tmp, self.path)
        except OutputError:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Drop the partial file (its close may fail again, e.g. on a full disk)."""
        import av

        try:
            self._container.close()
        except (OSError, av.FFmpegError):
            pass
        finally:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def read_video(path: Path) -> tuple[np.ndarray, dict[str, str], float]:
    """(frames (F, H, W, 3) uint8, container tags, fps) of a video file."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        return frames, dict(container.metadata), float(stream.average_rate or 0)
