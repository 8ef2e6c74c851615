"""Conditions of a job: prompt embeddings, the start (and end) image, its latent and SigLIP
features. Every model comes in through `Components`; nothing here loads weights.

Text (HunyuanVideo): the Llama hidden state of layer -3 over the prompt template, template
tokens cropped, at most 256 prompt tokens with a mask; plus CLIP-L's pooled output. Image
(fitted by fpk.media.images): encoded by the VAE (mean of its posterior, times
`scaling_factor`) and by SigLIP.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass

import numpy as np
import torch

MAX_PROMPT_TOKENS = 256  # HunyuanVideo's max_sequence_length
CLIP_TOKENS = 77
LLAMA_SKIP_LAYERS = 2  # hidden state -3 = skip the last 2 layers


@dataclass
class PromptEmbeds:
    embeds: torch.Tensor  # (1, L, D)
    mask: torch.Tensor  # (1, L) bool
    pooled: torch.Tensor  # (1, P)

    @staticmethod
    def mix(parts: list[tuple[PromptEmbeds, float]]) -> PromptEmbeds:
        """Weighted sum of prompt encodings (timestamped prompts blending over sections)."""
        if len(parts) == 1:
            return parts[0][0]
        length = max(p.embeds.shape[1] for p, _ in parts)
        padded = [w * _pad_tokens(p.embeds, length) for p, w in parts]
        embeds = functools.reduce(operator.add, padded)
        mask = torch.stack([_pad_tokens(p.mask[..., None], length)[..., 0] for p, _ in parts])
        pooled = functools.reduce(operator.add, [w * p.pooled for p, w in parts])
        return PromptEmbeds(embeds, mask.any(0), pooled)

    @staticmethod
    def batch(prompts: list[PromptEmbeds]) -> PromptEmbeds:
        """One batch (B, L, D) of prompts, each zero-padded (and masked) to the longest."""
        if len(prompts) == 1:
            return prompts[0]
        n = max(p.embeds.shape[1] for p in prompts)
        embeds = torch.cat([_pad_tokens(p.embeds, n) for p in prompts])
        mask = torch.cat([_pad_tokens(p.mask[..., None], n)[..., 0] for p in prompts])
        return PromptEmbeds(embeds, mask, torch.cat([p.pooled for p in prompts]))


def _pad_tokens(x: torch.Tensor, length: int) -> torch.Tensor:
    pad = length - x.shape[1]
    return x if pad == 0 else torch.cat([x, x.new_zeros(x.shape[0], pad, *x.shape[2:])], 1)


def prompt_template() -> dict:
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_framepack import (
        DEFAULT_PROMPT_TEMPLATE,
    )

    return DEFAULT_PROMPT_TEMPLATE


def template_crop(tokenizer) -> int:
    """Tokens of the template before the prompt: counted with this tokenizer (95 for
    HunyuanVideo's Llama-3 tokenizer, fewer for the tiny closed-vocabulary one)."""
    prefix = prompt_template()["template"].split("{}")[0]
    return len(tokenizer(prefix)["input_ids"])


@torch.no_grad()
def encode_prompt(components, text: str, device, dtype) -> PromptEmbeds:
    """Llama layer -3 (template cropped, <= 256 tokens, masked) and CLIP pooled output."""
    tok, llama = components.tokenizer, components.text_encoder
    crop = template_crop(tok)
    ids = tok(
        prompt_template()["template"].format(text),
        max_length=MAX_PROMPT_TOKENS + crop,
        padding="max_length",
        padding_side="right",  # the crop counts template tokens from the left
        truncation=True,
        return_tensors="pt",
    )
    hidden = llama(
        input_ids=ids.input_ids.to(device),
        attention_mask=ids.attention_mask.to(device),
        output_hidden_states=True,
    ).hidden_states[-(LLAMA_SKIP_LAYERS + 1)]
    embeds, mask = hidden[:, crop:], ids.attention_mask[:, crop:].to(device).bool()
    used = max(int(mask.sum()), 1)  # drop padding past the longest real token: shorter sequence
    clip_ids = components.tokenizer_2(
        text, max_length=CLIP_TOKENS, padding="max_length", truncation=True, return_tensors="pt"
    ).input_ids
    pooled = components.text_encoder_2(clip_ids.to(device)).pooler_output
    return PromptEmbeds(embeds[:, :used].to(dtype), mask[:, :used], pooled.to(dtype))


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (3, ..., H, W) in [-1, 1] (the VAE's range)."""
    x = torch.from_numpy(np.array(pixels, dtype=np.float32)) / 127.5 - 1
    return x.movedim(-1, 0)


@torch.no_grad()
def encode_latents(vae, pixels: torch.Tensor) -> torch.Tensor:
    """VAE latents (C, T, h, w) of pixels (3, F, H, W) in [-1, 1], scaled."""
    x = pixels[None].to(vae.device, vae.dtype)
    latent = vae.encode(x).latent_dist.mode()
    return (latent * vae.config.scaling_factor)[0].float()


@torch.no_grad()
def image_embeds(components, pixels: np.ndarray, device, dtype) -> torch.Tensor:
    """SigLIP last hidden state (1, N, D) of an RGB uint8 image (H, W, 3).

    Fed as a float tensor in [0, 1] without rescaling, as diffusers' FramePack pipeline does.
    """
    image = (to_tensor(pixels)[None] + 1) / 2  # (1, 3, H, W)
    inputs = components.feature_extractor(images=image, return_tensors="pt", do_rescale=False)
    pixel_values = inputs["pixel_values"].to(device, components.image_encoder.dtype)
    return components.image_encoder(pixel_values=pixel_values).last_hidden_state.to(dtype)
