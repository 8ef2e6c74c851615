"""One way to call the transformer: a batch of sections' inputs, built once per section.

Generation (fpk.run.pipeline), training (fpk.train) and the benchmarks all go through
`section_inputs` (what stays fixed while a section denoises: packed context, target
positions, prompt and image embeddings, distilled guidance) and `predict_flow` (one forward
at noisy latents and sigma). Sizes come from the models' configs, never from literals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from fpk.model.conditioning import PromptEmbeds
from fpk.model.transformer import ContextGroup

#: Flow-matching sigmas in [0, 1] enter the transformer as timesteps sigma * 1000, as trained.
TIMESTEP_SCALE = 1000.0
#: Distilled guidance is embedded as g * 1000 (HunyuanVideo's guidance embedder).
GUIDANCE_SCALE = 1000.0


@dataclass(frozen=True)
class SectionInputs:
    """Everything the transformer sees for B sections but the noisy latents and sigma."""

    prompt: PromptEmbeds  # embeds (B, L, D), mask (B, L), pooled (B, P)
    image_embeds: torch.Tensor  # (B, I, image_proj_dim)
    positions: torch.Tensor  # (B, S) model (RoPE) positions of the targets
    context: list[list[ContextGroup]]  # per sample, least important first
    guidance: torch.Tensor  # (B,) distilled guidance, already scaled
    # the transformer's per-section preparation (context tokens, RoPE), made at the first step
    prepared: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.guidance.dtype

    def to(self, device: torch.device | str, dtype: torch.dtype) -> SectionInputs:
        """On `device`, floating tensors in `dtype` (positions stay integer)."""
        p = self.prompt
        prompt = PromptEmbeds(
            p.embeds.to(device, dtype), p.mask.to(device), p.pooled.to(device, dtype)
        )
        context = [[_group_to(g, device, dtype) for g in groups] for groups in self.context]
        return SectionInputs(
            prompt,
            self.image_embeds.to(device, dtype),
            self.positions.to(device),
            context,
            self.guidance.to(device, dtype),
        )


def _group_to(group: ContextGroup, device, dtype) -> ContextGroup:
    latents = group.latents.to(device, dtype)
    return ContextGroup(latents, group.positions.to(device), group.kernel, group.mode)


def section_inputs(
    prompts: Sequence[PromptEmbeds],
    image_embeds: torch.Tensor,
    positions: torch.Tensor,
    contexts: Sequence[list[ContextGroup]],
    guidance: float,
) -> SectionInputs:
    """Inputs of B sections: prompts padded to one length and stacked, guidance scaled.

    `image_embeds` (B, I, D), `positions` (B, S) and `contexts` (B lists) are per sample."""
    prompt = PromptEmbeds.batch(list(prompts))
    scaled = torch.full((len(contexts),), guidance * GUIDANCE_SCALE, dtype=image_embeds.dtype)
    return SectionInputs(prompt, image_embeds, positions, list(contexts), scaled)


def predict_flow(model, x: torch.Tensor, sigma: torch.Tensor, inputs: SectionInputs):
    """The predicted flow (noise - data) at noisy latents x (B, C, S, h, w) and sigma (B,),
    in the inputs' dtype. A float64 sigma (the solvers' own) is scaled before rounding."""
    dtype = inputs.dtype
    return model(
        hidden_states=x.to(dtype),
        timestep=(sigma * TIMESTEP_SCALE).to(x.device, dtype),
        encoder_hidden_states=inputs.prompt.embeds,
        encoder_attention_mask=inputs.prompt.mask,
        pooled_projections=inputs.prompt.pooled,
        image_embeds=inputs.image_embeds,
        target_positions=inputs.positions,
        context=inputs.context,
        guidance=inputs.guidance,
        prepared=_prepared(model, x, inputs),
    )


def _prepared(model, x: torch.Tensor, inputs: SectionInputs):
    """The section's context tokens and RoPE, made once and reused by every step; None while
    training (gradients flow into the history embedder), for another model or size, or under
    group offloading (fpk.model.offload)."""
    if torch.is_grad_enabled() or not hasattr(model, "prepare"):
        return None
    if getattr(model, "_fpk_offloaded", False):  # group offloading: weights come per forward
        return None
    key = (id(model), tuple(x.shape[-2:]))
    if key not in inputs.prepared:
        inputs.prepared.clear()
        inputs.prepared[key] = model.prepare(inputs.positions, inputs.context, *x.shape[-2:])
    return inputs.prepared[key]


def tokens_per_frame(config, height: int, width: int) -> int:
    """Target tokens of one latent frame (h, w) under the model's patchify kernel."""
    p = config.patch_size
    return (height // p) * (width // p)


def target_tokens(config, latents: torch.Tensor) -> int:
    """Target tokens of section latents (..., S, h, w): what the sigma shift is sized by."""
    return latents.shape[-3] * tokens_per_frame(config, *latents.shape[-2:])


def image_tokens(image_encoder_config) -> int:
    """SigLIP tokens of one image: (image_size / patch_size)^2."""
    cfg = image_encoder_config
    return (cfg.image_size // cfg.patch_size) ** 2


def blank_image_embeds(components, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Zero image features (1, I, D): no image (text-to-video's start frame, cost probes)."""
    n = image_tokens(components.image_encoder.config)
    dim = components.transformer.config.image_proj_dim
    return torch.zeros(1, n, dim, dtype=dtype)


def latent_channels(components) -> int:
    """Channels of the latents the transformer denoises."""
    return components.transformer.config.in_channels
