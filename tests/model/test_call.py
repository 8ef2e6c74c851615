"""The one transformer call: inputs batched and scaled as the model was trained, sizes read
from the model's config."""

from __future__ import annotations

import types

import torch
from hypothesis import given
from hypothesis import strategies as st

from fpk.model.call import (
    GUIDANCE_SCALE,
    TIMESTEP_SCALE,
    blank_image_embeds,
    image_tokens,
    predict_flow,
    section_inputs,
    target_tokens,
    tokens_per_frame,
)
from fpk.model.conditioning import PromptEmbeds
from fpk.model.transformer import ContextGroup, FramePackTransformer


def _prompt(length: int, seed: int) -> PromptEmbeds:
    g = torch.Generator().manual_seed(seed)
    return PromptEmbeds(
        torch.randn(1, length, 16, generator=g),
        torch.ones(1, length, dtype=torch.bool),
        torch.randn(1, 8, generator=g),
    )


def _context(seed: int) -> list[ContextGroup]:
    g = torch.Generator().manual_seed(seed)
    return [ContextGroup(torch.randn(4, 1, 8, 8, generator=g), torch.tensor([0]), (1, 2, 2))]


def test_prompts_are_padded_masked_and_guidance_scaled():
    a, b = _prompt(3, 0), _prompt(5, 1)
    inputs = section_inputs(
        [a, b], torch.zeros(2, 4, 12), torch.zeros(2, 2, dtype=torch.long), [[], []], 6.0
    )
    assert inputs.prompt.embeds.shape == (2, 5, 16)
    assert inputs.prompt.mask.tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    torch.testing.assert_close(inputs.prompt.embeds[0, :3], a.embeds[0])
    assert inputs.prompt.embeds[0, 3:].abs().sum() == 0
    assert inputs.guidance.tolist() == [6.0 * GUIDANCE_SCALE] * 2


def test_inputs_move_to_device_and_dtype_keeping_integer_positions():
    inputs = section_inputs(
        [_prompt(3, 0)], torch.zeros(1, 4, 12), torch.tensor([[1, 2]]), [_context(0)], 10.0
    ).to("cpu", torch.bfloat16)
    assert inputs.dtype == torch.bfloat16
    assert inputs.prompt.embeds.dtype == inputs.image_embeds.dtype == torch.bfloat16
    assert inputs.context[0][0].latents.dtype == torch.bfloat16
    assert inputs.positions.dtype == torch.long and inputs.prompt.mask.dtype == torch.bool


def test_predict_flow_is_the_model_at_sigma_times_the_timestep_scale(tiny_arch):
    torch.manual_seed(0)
    model = FramePackTransformer(**tiny_arch).eval()
    x = torch.randn(1, 4, 2, 8, 8)
    inputs = section_inputs(
        [_prompt(3, 0)], torch.randn(1, 4, 12), torch.tensor([[1, 2]]), [_context(1)], 10.0
    )
    with torch.no_grad():
        got = predict_flow(model, x, torch.tensor([0.25], dtype=torch.float64), inputs)
        want = model(
            hidden_states=x,
            timestep=torch.tensor([0.25 * TIMESTEP_SCALE]),
            encoder_hidden_states=inputs.prompt.embeds,
            encoder_attention_mask=inputs.prompt.mask,
            pooled_projections=inputs.prompt.pooled,
            image_embeds=inputs.image_embeds,
            target_positions=inputs.positions,
            context=inputs.context,
            guidance=torch.tensor([10.0 * GUIDANCE_SCALE]),
        )
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@given(
    patch=st.integers(1, 4),
    frames=st.integers(1, 12),
    h=st.integers(1, 40),
    w=st.integers(1, 40),
)
def test_token_counts_follow_the_models_patch_size(patch, frames, h, w):
    config = types.SimpleNamespace(patch_size=patch)
    per_frame = tokens_per_frame(config, h * patch, w * patch)
    assert per_frame == h * w
    assert target_tokens(config, torch.empty(2, 3, frames, h * patch, w * patch)) == frames * h * w


def test_blank_image_embeds_are_sized_by_the_encoders_configs():
    comps = types.SimpleNamespace(
        image_encoder=types.SimpleNamespace(
            config=types.SimpleNamespace(image_size=32, patch_size=8)
        ),
        transformer=types.SimpleNamespace(config=types.SimpleNamespace(image_proj_dim=12)),
    )
    assert image_tokens(comps.image_encoder.config) == 16
    blank = blank_image_embeds(comps, torch.float16)
    assert blank.shape == (1, 16, 12) and blank.dtype == torch.float16 and not blank.any()


def test_the_section_is_prepared_once_and_gives_the_same_flow(monkeypatch):
    import torch

    from fpk.model import call
    from fpk.model.transformer import ContextGroup, FramePackTransformer

    from ..conftest import TINY_ARCH

    torch.manual_seed(0)
    model = FramePackTransformer(**TINY_ARCH).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, 0, 0.1)
    c, h, w = TINY_ARCH["in_channels"], 8, 8
    groups = [ContextGroup(torch.randn(c, 2, h, w), torch.tensor([-2, -1]), (1, 2, 2))]
    prompt = call.PromptEmbeds(torch.randn(1, 7, TINY_ARCH["text_embed_dim"]),
                               torch.ones(1, 7, dtype=torch.bool),
                               torch.randn(1, TINY_ARCH["pooled_projection_dim"]))  # fmt: skip
    image = torch.randn(1, 5, TINY_ARCH["image_proj_dim"])
    inputs = call.section_inputs([prompt], image, torch.tensor([[0, 1]]), [groups], 10.0)
    x = torch.randn(1, c, 2, h, w)
    calls = []
    prepare = model.prepare
    monkeypatch.setattr(model, "prepare", lambda *a: calls.append(1) or prepare(*a))
    with torch.no_grad():
        flows = [call.predict_flow(model, x, torch.tensor([s]), inputs) for s in (0.9, 0.5, 0.1)]
        plain = model(hidden_states=x, timestep=torch.tensor([100.0]),
                      encoder_hidden_states=prompt.embeds, encoder_attention_mask=prompt.mask,
                      pooled_projections=prompt.pooled, image_embeds=image,
                      target_positions=inputs.positions, context=[groups],
                      guidance=inputs.guidance)  # fmt: skip
    assert len(calls) == 2  # once for the three steps, once inside the plain forward
    assert torch.equal(flows[2], plain)  # sigma 0.1 = timestep 100: the same flow, exactly
    with torch.enable_grad():  # training: no cache (gradients reach the history embedder)
        call.predict_flow(model, x, torch.tensor([0.5]), inputs)
    assert len(calls) == 3
