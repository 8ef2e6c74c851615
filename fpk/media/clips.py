"""Reading a user's clip with PyAV: probe, then decode only what is needed.

Frames are resampled to the output frame rate by timestamp (which also handles variable
frame rates), rotated as the container's display matrix says, and fitted to the output size
(resize to cover, centre-crop). The tail of a long clip is reached by seeking to the keyframe
before it, so a clip of hours is never decoded in full.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fpk.errors import UsageError
from fpk.sampling.timeline import MAX_SECONDS


@dataclass(frozen=True)
class ClipInfo:
    path: Path
    duration: float  # seconds, from the header (or counted for short clips)
    fps: float
    width: int  # as displayed (after rotation)
    height: int
    rotation: int  # degrees, counter-clockwise, multiple of 90

    @property
    def frames(self) -> int:
        return max(1, round(self.duration * self.fps))


def probe(path: Path) -> ClipInfo:
    """What the header says about the clip; one clear error for everything unusable."""
    import av

    from fpk.media.images import require_file

    require_file(path, "clip")
    if path.stat().st_size == 0:
        raise UsageError(f"clip {path}: the file is empty (0 bytes)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UsageError(f"clip {path}: has no video stream (audio only?)")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0) or 30.0
            duration = _duration(container, stream)
            first = next(container.decode(stream), None)
            if first is None:
                raise UsageError(f"clip {path}: holds no decodable frame")
            rotation = int(getattr(first, "rotation", 0) or 0) % 360
            w, h = first.width, first.height
    except av.error.FFmpegError:
        raise UsageError(f"clip {path}: not a video file PyAV can read") from None
    if duration > MAX_SECONDS:
        raise UsageError(
            f"clip {path} is {duration / 3600:.1f} h long; fpk extends clips up to "
            f"{MAX_SECONDS // 3600} h: cut its tail out first (e.g. ffmpeg -sseof -60)"
        )
    if rotation % 180:
        w, h = h, w
    if duration <= 0:
        duration = 1 / fps  # a single frame, no duration in the header
    return ClipInfo(path, duration, fps, w, h, rotation)


def _duration(container, stream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return float(stream.frames / (stream.average_rate or 30)) if stream.frames else 0.0


def read_frames(clip: ClipInfo, fps: int, start: float = 0.0, count: int | None = None):
    """Frames (H, W, 3) uint8 at `fps` from `start` seconds, `count` of them (None: to the
    end), each the latest source frame shown at that time; rotation applied."""
    return list(iter_frames(clip, fps, start, count))


def iter_frames(
    clip: ClipInfo, fps: int, start: float, count: int | None, raw: bool = False
) -> Iterator:
    """As `read_frames`, one at a time; `raw` yields the decoded av.VideoFrame (no RGB
    conversion, no rotation) so that it can be re-encoded losslessly."""
    import av

    with av.open(str(clip.path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if start > 0:  # the keyframe before `start`: never decode a long clip from 0
            container.seek(int(start / stream.time_base), stream=stream, backward=True)
        k, last = 0, None
        try:
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else 0.0
                while (count is None or k < count) and last is not None and t > start + k / fps:
                    yield last
                    k += 1
                if count is not None and k >= count:
                    return
                last = frame if raw else _rotate(frame.to_ndarray(format="rgb24"), clip.rotation)
        except av.error.FFmpegError:
            if last is None:
                raise UsageError(f"clip {clip.path}: no frame could be decoded") from None
        end = start + clip.duration if count is None else None
        while last is not None and (count is None or k < count):
            if end is not None and start + k / fps >= clip.duration:
                return
            yield last
            k += 1


def _rotate(img: np.ndarray, rotation: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(img, k=rotation // 90)) if rotation else img
