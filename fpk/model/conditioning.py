"""Conditions of a job: prompt embeddings, the start (and end) image, its latent and SigLIP
features. Every model comes in through `Components`; nothing here loads weights.

Text (HunyuanVideo): the Llama hidden state of layer -3 over the prompt template, template
tokens cropped, at most 256 prompt tokens with a mask; plus CLIP-L's pooled output. Image:
bucketed to the preset's area (nearest aspect ratio), resized to cover, centre-cropped,
encoded by the VAE (mean of its posterior, times `scaling_factor`) and by SigLIP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fpk.config import Resolution
from fpk.errors import UsageError

MAX_PROMPT_TOKENS = 256  # HunyuanVideo's max_sequence_length
CLIP_TOKENS = 77
LLAMA_SKIP_LAYERS = 2  # hidden state -3 = skip the last 2 layers
MIN_IMAGE_SIDE = 16  # pixels; smaller images carry no usable content
MAX_IMAGE_PIXELS = 64_000_000  # refuse decompression bombs before decoding
MAX_ASPECT = 2.5  # widest bucket: width/height (or height/width)


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
        embeds = sum(w * _pad_tokens(p.embeds, length) for p, w in parts)
        mask = torch.stack([_pad_tokens(p.mask[..., None], length)[..., 0] for p, _ in parts])
        pooled = sum(w * p.pooled for p, w in parts)
        return PromptEmbeds(embeds, mask.any(0), pooled)  # type: ignore[arg-type]

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


# --- images ------------------------------------------------------------------------------


def open_image(path: Path, what: str = "--image"):
    """The image at `path` as RGB, or a UsageError naming what is wrong with it."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise UsageError(f"{what} {path}: no such file")
    if path.stat().st_size == 0:
        raise UsageError(f"{what} {path}: the file is empty (0 bytes)")
    try:
        with Image.open(path) as img:
            w, h = img.size
            if w * h > MAX_IMAGE_PIXELS:
                raise UsageError(
                    f"{what} {path}: {w}x{h} is too large ({w * h / 1e6:.0f} MP, limit "
                    f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP); downscale it first"
                )
            if min(w, h) < MIN_IMAGE_SIDE:
                raise UsageError(
                    f"{what} {path}: {w}x{h} is too small (at least {MIN_IMAGE_SIDE} px a side)"
                )
            return img.convert("RGB")
    except Image.DecompressionBombError:
        raise UsageError(
            f"{what} {path}: the image is too large (over {MAX_IMAGE_PIXELS / 1e6:.0f} MP); "
            "downscale it first"
        ) from None
    except UnidentifiedImageError:
        raise UsageError(
            f"{what} {path}: not an image PIL can read (png, jpg, webp, ...)"
        ) from None
    except OSError as err:
        raise UsageError(f"{what} {path}: cannot read the image ({err})") from None


def buckets(base: Resolution, multiple: int) -> list[Resolution]:
    """Sizes of about `base`'s area, sides multiples of `multiple`, aspect within 2.5:1."""
    area = base.width * base.height
    out = set()
    for w in range(multiple, int(math.sqrt(area * MAX_ASPECT)) + multiple, multiple):
        h = max(multiple, round(area / w / multiple) * multiple)
        if 1 / MAX_ASPECT <= w / h <= MAX_ASPECT:
            out.add(Resolution(w, h))
    return sorted(out, key=lambda r: r.width)


def nearest_bucket(width: int, height: int, base: Resolution, multiple: int) -> Resolution:
    """The bucket whose aspect ratio is nearest (in log) to width:height."""
    aspect = math.log(width / height)
    return min(
        buckets(base, multiple),
        key=lambda r: (abs(math.log(r.width / r.height) - aspect), -r.width * r.height),
    )


def fit_image(img, size: Resolution) -> np.ndarray:
    """Resize to cover `size` (Lanczos), then centre-crop: uint8 (H, W, 3)."""
    from PIL import Image

    scale = max(size.width / img.width, size.height / img.height)
    w, h = max(size.width, round(img.width * scale)), max(size.height, round(img.height * scale))
    img = img.resize((w, h), Image.Resampling.LANCZOS)
    left, top = (w - size.width) // 2, (h - size.height) // 2
    return np.asarray(img.crop((left, top, left + size.width, top + size.height)))


def fit_image_array(frame: np.ndarray, size: Resolution) -> np.ndarray:
    """`fit_image` for a decoded frame (H, W, 3) uint8; a frame already that size is kept."""
    if frame.shape[:2] == (size.height, size.width):
        return frame
    from PIL import Image

    return fit_image(Image.fromarray(frame), size)


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


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Pixels (3, F, H, W) in [-1, 1] of latents (C, T, h, w)."""
    z = (latents / vae.config.scaling_factor)[None].to(vae.device, vae.dtype)
    return vae.decode(z).sample[0].float().clamp(-1, 1)


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """(3, F, H, W) in [-1, 1] -> uint8 (F, H, W, 3)."""
    x = ((pixels.movedim(0, -1) + 1) * 127.5).round().clamp(0, 255)
    return x.to(torch.uint8).cpu().numpy()
