"""A user's folder of captioned clips, as `fpk train --lora --data FOLDER` reads it.

Two layouts (one folder may mix them; a .jsonl line wins over a .txt beside the clip; a clip
listed twice is an error):
- side by side: `clip.mp4` and `clip.txt` (the caption, UTF-8); any of CLIP_SUFFIXES;
- a JSON-lines file in the folder (`*.jsonl`): one `{"video": "clip.mp4", "caption": "..."}`
  per line (`file`/`path` and `prompt`/`text` are read as well), paths relative to the folder.

Each clip is read at the preset's frame rate (fpk.media.clips: rotation and variable frame
rates handled), fitted to the preset's aspect-ratio bucket nearest its own (the same buckets
`fpk generate` picks for an image), and encoded once into latents. Clips longer than
MAX_SECTIONS sections keep their first MAX_SECTIONS; a clip shorter than one section is
refused with its length and the length needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fpk.errors import UsageError

CLIP_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
MAX_SECTIONS = 8


@dataclass(frozen=True)
class Clip:
    path: Path
    caption: str


def find_clips(folder: Path, flag: str = "--data") -> list[Clip]:
    """Every captioned clip of `folder`, in name order; one clear error for a folder with
    none, a clip with no caption, or a caption line naming a missing clip (naming `flag`, the
    option that gave the folder)."""
    if not folder.is_dir():
        raise UsageError(f"{flag} {folder}: not a folder; give a folder of clip.mp4 + clip.txt")
    found: dict[Path, str] = {}
    for jsonl in sorted(folder.glob("*.jsonl")):
        for clip in _jsonl_clips(jsonl, folder, flag):
            _add(found, clip, jsonl, flag)
    for video in sorted(p for p in folder.iterdir() if p.suffix.lower() in CLIP_SUFFIXES):
        if video.resolve() in found:
            continue
        text = video.with_suffix(".txt")
        if not text.is_file():
            raise UsageError(
                f"{flag}: clip {video.name} has no caption: write {text.name} beside it "
                "(or list it in a .jsonl file)"
            )
        _add(found, Clip(video, _caption(text.read_bytes(), text, flag)), text, flag)
    if not found:
        raise UsageError(
            f"{flag} {folder}: no captioned clips (clip.mp4 + clip.txt, or a .jsonl file)"
        )
    return sorted(
        (Clip(path, caption) for path, caption in found.items()), key=lambda c: str(c.path)
    )


def _add(found: dict[Path, str], clip: Clip, where: Path, flag: str) -> None:
    key = clip.path.resolve()
    if key in found:
        raise UsageError(f"{flag}: clip {clip.path.name} is captioned twice (again in {where})")
    found[key] = clip.caption


def _caption(raw: bytes, where: Path, flag: str) -> str:
    try:
        text = " ".join(raw.decode("utf-8").split())
    except UnicodeDecodeError:
        raise UsageError(f"{flag}: caption {where} is not UTF-8 text") from None
    if not text:
        raise UsageError(f"{flag}: caption {where} is empty")
    return text


def _jsonl_clips(jsonl: Path, folder: Path, flag: str) -> list[Clip]:
    out = []
    for n, line in enumerate(jsonl.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise UsageError(f"{flag}: {jsonl.name} line {n} is not JSON") from None
        name = _first(row, ("video", "file", "path"))
        caption = _first(row, ("caption", "prompt", "text"))
        if not isinstance(row, dict) or name is None or caption is None:
            raise UsageError(
                f'{flag}: {jsonl.name} line {n}: give {{"video": "clip.mp4", "caption": "..."}}'
            )
        path = (folder / str(name)).resolve()
        if not path.is_relative_to(folder.resolve()) or not path.is_file():
            raise UsageError(f"{flag}: {jsonl.name} line {n}: no clip {name} in {folder}")
        out.append(Clip(path, _caption(str(caption).encode(), jsonl, flag)))
    return out


def _first(row, keys: tuple[str, ...]):
    return next((row[k] for k in keys if isinstance(row, dict) and k in row), None)


def read_clip(rt, clip: Clip, window: int, flag: str = "--data") -> np.ndarray:
    """One clip's frames (F, H, W, 3 uint8) as the section task trains on them: at the
    preset's frame rate, fitted to its nearest aspect bucket, up to MAX_SECTIONS sections."""
    from fpk.media import clips, images

    preset = rt.preset
    info = clips.probe(clip.path)
    size = images.nearest_bucket(
        info.width, info.height, preset.sampling.resolution, preset.resolution_multiple
    )
    section = window * rt.temporal
    want = 1 + MAX_SECTIONS * section
    available = max(1, round(info.duration * preset.sampling.fps))
    frames = clips.read_frames(info, preset.sampling.fps, 0.0, min(want, available))
    usable = 1 + (len(frames) - 1) // section * section
    if usable < 1 + section:
        raise UsageError(
            f"{flag}: clip {clip.path.name} gives {len(frames)} frames at "
            f"{preset.sampling.fps} fps; a section needs {1 + section}"
        )
    return np.stack([images.fit_image_array(f, size) for f in frames[:usable]])


@torch.no_grad()
def encode_pixels(comps, rt, pixels: np.ndarray, caption: str, window: int) -> dict:
    """Frames (F, H, W, 3 uint8) as the section task samples them: their latents, latent grid,
    caption and the image embeddings of the first frame."""
    from fpk.config import Resolution
    from fpk.model import conditioning as cond

    latents = cond.encode_latents(comps.vae, cond.to_tensor(pixels))
    embeds = cond.image_embeds(comps, pixels[0], rt.device, rt.dtype)
    return {
        "latents": latents.contiguous(),
        "prompt": caption,
        "image_embeds": embeds,
        "grid": rt.preset.latent_grid(Resolution(pixels.shape[2], pixels.shape[1])),
        "sections": (latents.shape[1] - 1) // window,
        "first_frame": pixels[0],
    }


def encode_clip(comps, rt, clip: Clip, window: int, flag: str = "--data") -> dict:
    """One clip as the section task samples it (read_clip, then encode_pixels)."""
    return encode_pixels(comps, rt, read_clip(rt, clip, window, flag), clip.caption, window)


def still_shifts(pixels: np.ndarray, step: int, tolerance: int = 12) -> list[tuple[int, int]]:
    """The translations (dx, dy), multiples of `step` px and not both 0, by which `pixels`
    (F, H, W, 3) can be rolled (wrap-around) without anything that moves crossing the
    frame's edge: the strips that wrap round are still (within `tolerance` of the first
    frame) in every frame. A copy so shifted is the same clip somewhere else: the same motion,
    the same look, a background that was still there before and is still after."""
    diff = np.abs(pixels.astype(np.int16) - pixels[:1].astype(np.int16)).max(axis=(0, 3))
    moving = diff > tolerance  # (H, W): pixels where something changes over the clip
    h, w = moving.shape
    rows, cols = moving.any(axis=1), moving.any(axis=0)
    if rows.any():  # the moving part's extent, and the shifts that keep it inside the frame
        top, bottom = int(np.argmax(rows)), int(h - 1 - np.argmax(rows[::-1]))
        left, right = int(np.argmax(cols)), int(w - 1 - np.argmax(cols[::-1]))
        ys, xs = range(-top, h - bottom), range(-left, w - right)
    else:  # nothing moves: every distinct roll keeps it whole
        ys, xs = range(h), range(w)
    ys, xs = [d for d in ys if d % step == 0], [d for d in xs if d % step == 0]
    return [(dx, dy) for dy in ys for dx in xs if dx or dy]


def shifted_copies(pixels: np.ndarray, count: int, step: int, rng) -> list[np.ndarray]:
    """Up to `count` copies of `pixels` rolled by distinct still_shifts, drawn with `rng`
    (`fpk train --lora --shift-copies`); none, and no draw, for a count of 0."""
    if count <= 0:
        return []
    shifts = still_shifts(pixels, step)
    picked = rng.sample(shifts, min(count, len(shifts)))
    return [np.roll(pixels, (dy, dx), axis=(1, 2)) for dx, dy in picked]


def write_world_clips(folder: Path, scenes, seconds: float, fps: int = 30) -> list[Path]:
    """Each synthetic-world scene of `scenes` as `folder/NN.mp4` + `NN.txt` (its prompt): a
    data folder for `fpk train --lora`, with a ground truth for every frame."""
    from fpk.media.video import VideoWriter
    from fpk.synthetic import world

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, s in enumerate(scenes):
        path = folder / f"{i:02d}.mp4"
        writer = VideoWriter(path, fps, world.SIZE, world.SIZE, crf=0)
        for frame in world.render(s, 1 + round(seconds * fps)):
            writer.write(frame)
        writer.close()
        path.with_suffix(".txt").write_text(s.prompt + "\n", encoding="utf-8")
        paths.append(path)
    return paths
