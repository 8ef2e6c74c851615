"""Decoding in overlapping chunks: every pixel frame once, in order, shared frames blended."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fpk.media.decoding import MAX_SPAN, pixel_frames, plan_chunks, span_for, stream_frames


def _fake_decode(temporal: int):
    """A 'VAE' whose frame values are their global pixel index: latent a..b-1 decodes to the
    indices temporal*a .. temporal*(b-1), the causal layout (first latent: one frame)."""

    def decode(start: int, stop: int) -> torch.Tensor:
        idx = torch.arange(temporal * start, temporal * (stop - 1) + 1, dtype=torch.float32)
        return idx.view(1, -1, 1, 1).expand(3, -1, 2, 2)

    return decode


@given(st.integers(1, 60), st.integers(1, 9), st.integers(1, 9), st.data())
@settings(max_examples=200, deadline=None)
def test_every_frame_once_in_order(latents, window, overlap, data):
    total = pixel_frames(latents)
    limit = data.draw(st.integers(1, total))
    span = data.draw(st.none() | st.integers(1, 40))
    chunks = stream_frames(_fake_decode(4), latents, window, overlap, limit, span=span)
    got = torch.cat(list(chunks), dim=1)[0, :, 0, 0]
    assert torch.allclose(got, torch.arange(limit, dtype=torch.float32), atol=1e-4)


@given(st.integers(2, 60), st.integers(1, 9), st.integers(1, 9))
def test_chunks_cover_and_share_4o_minus_3(latents, window, overlap):
    chunks = plan_chunks(latents, window, overlap)
    assert chunks[0].start == 0 and chunks[-1].stop == latents
    o = max(1, min(overlap, window))
    for prev, cur in zip(chunks, chunks[1:], strict=False):
        assert cur.start == prev.stop - o and cur.blend == 4 * o - 3
        assert cur.stop - cur.start <= window + o  # one window of new frames at a time


@given(st.integers(2, 200), st.integers(1, 9), st.integers(1, 9), st.integers(1, 40))
def test_chunks_of_a_span_decode_only_the_overlaps_twice(latents, window, overlap, span):
    chunks = plan_chunks(latents, window, overlap, span=span)
    o = max(1, min(overlap, window))
    longest = max(span, window + o)
    assert chunks[0].start == 0 and chunks[-1].stop == latents
    for prev, cur in zip(chunks, chunks[1:], strict=False):
        assert cur.start == prev.stop - o and cur.blend == 4 * o - 3
    assert all(c.stop - c.start <= longest for c in chunks)
    assert all(c.stop - c.start == longest for c in chunks[:-1])  # all full but the last
    decoded = sum(c.stop - c.start for c in chunks)
    assert decoded == latents + o * (len(chunks) - 1)


@given(st.integers(1, 1 << 34), st.integers(1, 9), st.integers(1, 9), st.booleans())
def test_span_fits_the_budget_and_never_falls_below_a_window(per_frame, window, overlap, tiled):
    from fpk.media.decoding import DECODE_BUDGET

    span = span_for(per_frame, window, overlap, tiled)
    least = window + max(1, min(overlap, window))
    assert least <= span <= max(least, MAX_SPAN)
    if tiled:
        assert span == max(least, MAX_SPAN)
    elif span > least:  # chosen by the budget: its pixel frames fit
        assert pixel_frames(span) * per_frame <= DECODE_BUDGET
        assert span == MAX_SPAN or pixel_frames(span + 1) * per_frame > DECODE_BUDGET


def test_blend_fades_linearly():
    from fpk.media.decoding import crossfade

    prev = torch.zeros(3, 5, 1, 1)
    cur = torch.ones(3, 5, 1, 1)
    out = crossfade(prev, cur, 5)[0, :, 0, 0]
    assert torch.allclose(out, torch.linspace(0, 1, 5))


def test_runtime_applies_the_presets_framewise_decoding(tiny_saved):
    """`[vae] framewise_decoding` reaches the VAE: tiny decodes a chunk in one pass, the
    13B presets in diffusers' temporal tiles."""
    from dataclasses import replace

    from fpk.model.loading import load_components
    from fpk.run.runtime import Runtime

    preset, _, folder = tiny_saved
    comps = load_components(preset, folder)
    Runtime(preset, comps, torch.device("cpu"), torch.float32)
    assert comps.vae.use_framewise_decoding is False
    tiled = replace(preset, vae=replace(preset.vae, framewise_decoding=True))
    Runtime(tiled, comps, torch.device("cpu"), torch.float32)
    assert comps.vae.use_framewise_decoding is True
