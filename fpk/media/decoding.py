"""Decoding latents to frames in time order with overlapping chunks, memory flat in length.

The causal VAE decodes latent frames [a, b) to 1 + t*(b - a - 1) pixel frames, the first of
which stands for the last pixel frame of latent a (global pixel t*a; latent 0 is the start
frame, pixel 0). FramePack's demo decodes each section together with `overlap` latent frames
of its neighbour and cross-fades the t*overlap - (t - 1) pixel frames they share (overlap =
window gives its window*4-3), so every latent frame is decoded twice. Here a chunk spans up to
`span` latent frames (`decode_span`: as many as the VAE's activations allow, up to the 33 of
HunyuanVideo's 129-frame clips), so only the overlaps are decoded twice; chunks go in time
order and frames are handed out as soon as no later chunk can change them, so only one chunk
of pixels is ever held.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Chunk:
    start: int  # first latent frame (inclusive)
    stop: int  # last latent frame + 1
    first_pixel: int  # global pixel index of the chunk's first decoded frame
    blend: int  # leading pixel frames shared with the previous chunk


MAX_SPAN = 33  # latent frames a decode call takes at most: HunyuanVideo's 129-frame clip
DECODE_BUDGET = 2 << 30  # bytes of VAE activations a decode call may hold (untiled VAEs)
VAE_FACTOR = 6  # live (pixels x widest channels) tensors at a VAE decoder's peak


def span_for(per_frame: int, window: int, overlap: int, framewise: bool, temporal: int = 4) -> int:
    """Latent frames per decode call for a VAE holding `per_frame` bytes of activations per
    pixel frame: MAX_SPAN where it decodes in temporal tiles (diffusers' framewise decoding
    bounds its memory), else as many as DECODE_BUDGET holds; never fewer than a window and
    its overlap."""
    least = window + max(1, min(overlap, window))
    if framewise:
        return max(least, MAX_SPAN)
    fits = (DECODE_BUDGET // max(1, per_frame) - 1) // temporal + 1
    return max(least, min(MAX_SPAN, fits))


def frame_bytes(vae, height: int, width: int, item: int | None = None) -> int:
    """Estimated activation bytes per decoded pixel frame: pixels x the decoder's widest
    channels x VAE_FACTOR (x `item`, its dtype's size; the VAE's own by default)."""
    item = item or next(vae.parameters()).element_size()
    return height * width * vae.config.block_out_channels[0] * item * VAE_FACTOR


def decode_span(vae, height: int, width: int, window: int, overlap: int, temporal: int = 4) -> int:
    """`span_for` this VAE at `height` x `width` as it is set up now."""
    framewise = bool(getattr(vae, "use_framewise_decoding", False))
    return span_for(frame_bytes(vae, height, width), window, overlap, framewise, temporal)


def plan_chunks(
    latent_frames: int, window: int, overlap: int, temporal: int = 4, span: int | None = None
) -> list[Chunk]:
    """Chunks covering latent frames [0, latent_frames), each of at most `span` latent frames
    (at least window + overlap; that by default: one window of new frames at a time)."""
    overlap = max(1, min(overlap, window))
    span = max(span or 0, window + overlap)
    chunks = [Chunk(0, min(latent_frames, span), 0, 0)]
    while chunks[-1].stop < latent_frames:
        start = chunks[-1].stop - overlap
        stop = min(latent_frames, start + span)
        shared = temporal * (chunks[-1].stop - 1) - temporal * start + 1
        chunks.append(Chunk(start, stop, temporal * start, shared))
    return chunks


def pixel_frames(latent_frames: int, temporal: int = 4) -> int:
    return 1 + temporal * (latent_frames - 1)


def stream_frames(
    decode: Callable[[int, int], torch.Tensor],
    latent_frames: int,
    window: int,
    overlap: int,
    limit: int,
    temporal: int = 4,
    span: int | None = None,
) -> Iterator[torch.Tensor]:
    """Yield final pixel frames (3, F, H, W) in order, `limit` in all.

    `decode(start, stop)` decodes latent frames [start, stop) to (3, F, H, W); chunks as
    `plan_chunks` lays them out.
    """
    pending: torch.Tensor | None = None  # decoded frames a later chunk may still blend
    emitted = 0
    chunks = plan_chunks(latent_frames, window, overlap, temporal, span)
    for i, chunk in enumerate(chunks):
        if emitted >= limit:
            return
        pixels = decode(chunk.start, chunk.stop)
        if pending is not None and chunk.blend:
            pixels = crossfade(pending[:, -chunk.blend :], pixels, chunk.blend)
        last = i == len(chunks) - 1
        keep = 0 if last else chunks[i + 1].blend
        final = pixels[:, : pixels.shape[1] - keep]
        pending = pixels[:, pixels.shape[1] - keep :] if keep else None
        out = final[:, : max(0, limit - emitted)]
        emitted += out.shape[1]
        if out.shape[1]:
            yield out


def crossfade(previous: torch.Tensor, current: torch.Tensor, shared: int) -> torch.Tensor:
    """`current` with its first `shared` frames faded in linearly from `previous`'s last."""
    w = torch.linspace(1, 0, shared, dtype=current.dtype, device=current.device)
    w = w.view(1, -1, 1, 1)
    head = w * previous[:, -shared:] + (1 - w) * current[:, :shared]
    return torch.cat([head, current[:, shared:]], dim=1)


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Pixels (3, F, H, W) in [-1, 1] of latents (C, T, h, w)."""
    z = (latents / vae.config.scaling_factor)[None].to(vae.device, vae.dtype)
    return vae.decode(z).sample[0].float().clamp(-1, 1)


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """(3, F, H, W) in [-1, 1] -> uint8 (F, H, W, 3)."""
    x = ((pixels.movedim(0, -1) + 1) * 127.5).round().clamp(0, 255)
    return x.to(torch.uint8).cpu().numpy()
