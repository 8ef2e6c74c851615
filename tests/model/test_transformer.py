"""Parity with diffusers' FramePack transformer, per-sample layouts, projections."""

from __future__ import annotations

import pytest
import torch
from diffusers import HunyuanVideoFramepackTransformer3DModel

from fpk.model.transformer import ContextGroup, FramePackTransformer, inflate_projection

H, W, WINDOW = 16, 16, 3  # latent size; kernels (4,8,8) divide it


def _reference(arch: dict) -> HunyuanVideoFramepackTransformer3DModel:
    torch.manual_seed(0)
    ref = HunyuanVideoFramepackTransformer3DModel(
        **arch, has_image_proj=True, has_clean_x_embedder=True, guidance_embeds=True
    )
    with torch.no_grad():  # zero-initialised layers would hide bugs: randomise everything
        for p in ref.parameters():
            p.normal_(0, 0.3)
    return ref.eval()


def _ours(ref, arch: dict) -> FramePackTransformer:
    ours = FramePackTransformer(**arch).eval()
    missing, unexpected = ours.load_state_dict(ref.state_dict(), strict=True)
    assert not missing and not unexpected
    return ours


def _released_inputs(batch: int, inverted: bool, seed: int = 1) -> dict:
    """Inputs in the released layouts (DESIGN.md sec. 1)."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    if inverted:  # [start(1) | padding(2 windows) | target | 1x | 2x(2) | 4x(16)]
        pad = 2 * WINDOW
        idx = torch.arange(1 + pad + WINDOW + 1 + 2 + 16)
        start, tgt = idx[:1], idx[1 + pad : 1 + pad + WINDOW]
        post, two, four = idx[1 + pad + WINDOW :].split([1, 2, 16])
        clean_idx = torch.cat([start, post])
    else:  # forward (F1): [start(1) | 4x(16) | 2x(2) | 1x(1) | target]
        idx = torch.arange(1 + 16 + 2 + 1 + WINDOW)
        start, four, two, one, tgt = idx.split([1, 16, 2, 1, WINDOW])
        clean_idx = torch.cat([start, one])
    mask = torch.ones(batch, 7, dtype=torch.bool)
    mask[-1, 5:] = False  # the last sample has a shorter prompt
    return dict(
        hidden_states=rnd(batch, 4, WINDOW, H, W),
        timestep=torch.tensor([700.0, 300.0][:batch]),
        encoder_hidden_states=rnd(batch, 7, 16),
        encoder_attention_mask=mask,
        pooled_projections=rnd(batch, 8),
        image_embeds=rnd(batch, 5, 12),
        guidance=torch.full((batch,), 10000.0),
        latents_clean=rnd(batch, 4, 2, H, W),
        latents_history_2x=rnd(batch, 4, 2, H, W),
        latents_history_4x=rnd(batch, 4, 16, H, W),
        indices=(tgt, clean_idx, two, four),
    )


def _as_groups(inputs: dict, b: int) -> list[ContextGroup]:
    tgt, clean_idx, two, four = inputs["indices"]
    return [
        ContextGroup(inputs["latents_history_4x"][b], four, (4, 8, 8)),
        ContextGroup(inputs["latents_history_2x"][b], two, (2, 4, 4)),
        ContextGroup(inputs["latents_clean"][b], clean_idx, (1, 2, 2)),
    ]


@pytest.mark.parametrize("inverted", [True, False], ids=["inverted", "forward"])
@pytest.mark.parametrize("batch", [1, 2])
def test_parity_with_diffusers(tiny_arch, inverted, batch):
    ref = _reference(tiny_arch)
    ours = _ours(ref, tiny_arch)
    x = _released_inputs(batch, inverted)
    tgt, clean_idx, two, four = x["indices"]
    common = {
        k: x[k]
        for k in (
            "hidden_states",
            "timestep",
            "encoder_hidden_states",
            "encoder_attention_mask",
            "pooled_projections",
            "image_embeds",
            "guidance",
        )
    }
    with torch.no_grad():
        want = ref(
            **common,
            indices_latents=tgt,
            latents_clean=x["latents_clean"],
            indices_latents_clean=clean_idx,
            latents_history_2x=x["latents_history_2x"],
            indices_latents_history_2x=two,
            latents_history_4x=x["latents_history_4x"],
            indices_latents_history_4x=four,
            return_dict=False,
        )[0]
        got = ours(
            **common,
            target_positions=tgt.expand(batch, -1),
            context=[_as_groups(x, b) for b in range(batch)],
        )
    assert got.shape == want.shape
    rel = ((got - want).abs().max() / want.abs().max()).item()
    assert rel < 1e-5, rel


def test_state_dict_keys_match_released(tiny_arch):
    ref = HunyuanVideoFramepackTransformer3DModel(
        **tiny_arch, has_image_proj=True, has_clean_x_embedder=True
    )
    ours = FramePackTransformer(**tiny_arch)
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert got == want


def test_inflated_projection_keeps_constant_input(tiny_arch):
    src = torch.nn.Conv3d(4, 6, (1, 2, 2), stride=(1, 2, 2))
    for kernel in [(1, 4, 2), (2, 4, 4), (1, 8, 8), (1, 6, 6)]:
        dst = torch.nn.Conv3d(4, 6, kernel, stride=kernel)
        inflate_projection(src, dst)
        const = torch.randn(1, 4, 1, 1, 1)
        a = src(const.expand(1, 4, *src.kernel_size))
        b = dst(const.expand(1, 4, *kernel))
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
