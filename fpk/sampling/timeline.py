"""Durations, section counts and frame arithmetic: pure functions of integers.

A video of F pixel frames is 1 + (F - 1) / t latent frames (the causal VAE, temporal
compression t = 4): the start frame plus sections of `window` latent frames each. A section
decodes to window * t pixel frames (9 * 4 = 36; the official demo counts 33 = 9*4-3 for the
overlap it blends).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from fpk.errors import UsageError

#: Longest video fpk accepts: a bound against typos such as `--len 100000m`.
MAX_SECONDS = 6 * 3600
_LENGTH = re.compile(
    r"^(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s?)?$"
)


def parse_length(text: str, fps: int) -> int:
    """Frames at `fps` for '5s', '1m30s', '1h', '150f' or plain seconds ('2.5')."""
    raw = str(text).strip().lower().replace(" ", "")
    if fps <= 0:
        raise UsageError(f"--fps must be positive, got {fps}")
    if raw.endswith("f") and raw[:-1].isdigit():
        frames = int(raw[:-1])
    else:
        match = _LENGTH.match(raw)
        if not raw or not match or not any(match.groupdict().values()):
            raise UsageError(f"--len '{text}' is not a length; use e.g. 5s, 1m30s, 150f or 2.5")
        seconds = sum(
            float(v or 0) * k
            for v, k in zip(match.group("h", "m", "s"), (3600, 60, 1), strict=True)
        )
        frames = round(seconds * fps)
    if frames < 1:
        raise UsageError(f"--len '{text}' is shorter than one frame at {fps} fps")
    if frames > MAX_SECONDS * fps:
        raise UsageError(f"--len '{text}' is longer than the {MAX_SECONDS // 3600} h fpk accepts")
    return frames


@dataclass(frozen=True)
class SectionGrid:
    """How `frames` pixel frames are covered by sections of `window` latent frames."""

    frames: int  # requested pixel frames
    window: int  # latent frames per section
    temporal: int  # VAE temporal compression
    sections: int

    @property
    def latent_frames(self) -> int:
        """Start frame plus every section."""
        return 1 + self.sections * self.window

    @property
    def generated_frames(self) -> int:
        """Pixel frames the sections decode to, before trimming to `frames`."""
        return (self.latent_frames - 1) * self.temporal + 1

    @property
    def trimmed(self) -> int:
        return self.generated_frames - self.frames

    def section_frames(self, section: int) -> range:
        """Latent frames of section `section` (0 = the one right after the start frame)."""
        first = 1 + section * self.window
        return range(first, first + self.window)


def section_grid(frames: int, window: int, temporal: int = 4) -> SectionGrid:
    """Fewest sections whose frames cover `frames` (the excess is trimmed from the end)."""
    if window <= 0 or temporal <= 0:
        raise UsageError(f"--window must be positive, got {window}")
    if frames < 1:
        raise UsageError(f"a video needs at least one frame, got {frames}")
    sections = max(1, math.ceil((frames - 1) / (window * temporal)))
    return SectionGrid(frames=frames, window=window, temporal=temporal, sections=sections)


def official_section_count(seconds: float, window: int, fps: int = 30) -> int:
    """The official demo's count, max(1, round(seconds * fps / (window * 4))): for reference."""
    return max(1, round(seconds * fps / (window * 4)))
