"""A running job's preview: `OUT/.fpk-work/NAME/preview.png`, a contact sheet of the video so
far, rewritten after every finished section (as the official demo shows its live preview), so
that a long job can be checked before it ends.

The sheet has up to `MAX_TILES` tiles at latent positions spread evenly over the whole video,
in time order; a position not sampled yet is a grey tile (the inverted order fills the end
first). Each tile is one latent frame decoded on its own, decoded once: a finished section's
latents never change.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from fpk.media import decoding

PREVIEW_NAME = "preview.png"
MAX_TILES = 16
TILE_SIDE = 128  # pixels on a tile's longer side, at most
GREY = 64


def tile_positions(latent_frames: int, tiles: int = MAX_TILES) -> list[int]:
    """Up to `tiles` latent positions spread evenly over [0, latent_frames), first and last
    included, increasing."""
    n = max(1, min(tiles, latent_frames))
    if n == 1:
        return [0]
    return sorted({round(i * (latent_frames - 1) / (n - 1)) for i in range(n)})


class Preview:
    """The contact sheet of one job; `update` after each finished section."""

    def __init__(self, vae, folder: Path, latent_frames: int) -> None:
        self.vae, self.path = vae, folder / PREVIEW_NAME
        self.positions = tile_positions(latent_frames)
        self.tiles: dict[int, np.ndarray] = {}

    def update(self, latents: dict[int, torch.Tensor]) -> Path:
        """Decode the tiles whose latents are known and new; write the sheet atomically."""
        for p in self.positions:
            if p in latents and p not in self.tiles:
                self.tiles[p] = self._tile(latents[p])
        sheet = contact_sheet([self.tiles.get(p) for p in self.positions], self._tile_shape())
        _save_png(sheet, self.path)
        return self.path

    def _tile(self, latent: torch.Tensor) -> np.ndarray:
        frame = decoding.to_uint8(decoding.decode_latents(self.vae, latent[:, None]))[0]
        return _shrink(frame)

    def _tile_shape(self) -> tuple[int, int]:
        if self.tiles:
            return next(iter(self.tiles.values())).shape[:2]
        return (TILE_SIDE, TILE_SIDE)


def _shrink(frame: np.ndarray) -> np.ndarray:
    """`frame` (H, W, 3) with its longer side at most TILE_SIDE (whole-number step)."""
    step = max(1, math.ceil(max(frame.shape[:2]) / TILE_SIDE))
    return np.ascontiguousarray(frame[::step, ::step])


def contact_sheet(tiles: list[np.ndarray | None], shape: tuple[int, int], gap: int = 2):
    """Tiles (H, W, 3) in rows of ceil(sqrt(n)), `gap` black pixels apart; None is grey."""
    h, w = shape
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    sheet = np.zeros((rows * (h + gap) - gap, cols * (w + gap) - gap, 3), np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        y, x = r * (h + gap), c * (w + gap)
        sheet[y : y + h, x : x + w] = GREY if tile is None else tile[:h, :w]
    return sheet


def _save_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    from fpk.media.video import publishing

    with publishing(path) as tmp:  # a full disk: one line, no partial file
        Image.fromarray(image).save(tmp, format="PNG")
