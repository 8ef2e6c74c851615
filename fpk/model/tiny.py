"""Small instances of the real component classes, saved in the real directory layout.

The Llama and CLIP text encoders, the SigLIP image encoder and the HunyuanVideo VAE of
`tiny`-sized presets (and of the test fixtures) are these classes at a small size, with BPE
tokenizers built for a closed vocabulary: the same `from_pretrained` path loads them as the
real 13B components.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from fpk.config import Preset, VaeSpec
from fpk.model.transformer import FramePackTransformer, transformer_config

LLAMA_SPECIALS = ("<unk>", "<s>", "</s>", "<pad>")
CLIP_SPECIALS = ("<|startoftext|>", "<|endoftext|>")
WORD_START = "\u2581"  # the Metaspace marker Llama's tokenizer prefixes words with
CLIP_WORD_END = "</w>"
#: Llama layers: fpk reads the hidden state of layer -3 (HunyuanVideo), so at least 3.
LLAMA_LAYERS = 3
TINY_HEADS = 2  # attention heads of each tiny encoder


@dataclass(frozen=True)
class TinySizes:
    """Sizes of the tiny encoders and VAE; the transformer's come from the preset."""

    vae_channels: tuple[int, ...] = (16, 32, 32)
    vae_layers: int = 1
    #: GroupNorm groups of the VAE. Its last norm sees the finest block's channels; with one
    #: channel a group it would erase every clip's absolute colour (only shapes survive).
    vae_groups: int = 8
    #: Self-attention in the VAE's mid block (the released VAE has it).
    vae_attention: bool = True
    image_size: int = 32
    image_patch: int = 8
    encoder_layers: int = 1


def _bpe(words: Iterable[str], prefix: str = "", suffix: str = "") -> tuple[dict[str, int], list]:
    """Character pieces plus one merge chain per word, so every listed word is one token."""
    vocab: dict[str, int] = {}
    merges: list[tuple[str, str]] = []
    chars = [prefix, *string.ascii_lowercase, *(c + suffix for c in string.ascii_lowercase)]
    for piece in filter(None, chars):
        vocab.setdefault(piece, len(vocab))
    for word in dict.fromkeys(words):
        pieces = ([prefix] if prefix else []) + list(word)
        pieces[-1] += suffix
        current = pieces[0]
        for piece in pieces[1:]:
            vocab.setdefault(piece, len(vocab))
            merges.append((current, piece))
            current += piece
            vocab.setdefault(current, len(vocab))
    return vocab, list(dict.fromkeys(merges))


def _with_specials(specials: Iterable[str], vocab: dict[str, int]) -> dict[str, int]:
    out = {s: i for i, s in enumerate(specials)}
    for piece in vocab:
        out.setdefault(piece, len(out))
    return out


def build_tokenizers(words: Iterable[str]):
    """(Llama tokenizer, CLIP tokenizer) whose vocabularies hold `words` as single tokens."""
    from transformers import CLIPTokenizer, LlamaTokenizerFast

    words = [w.lower() for w in words]
    vocab, merges = _bpe(words, prefix=WORD_START)
    llama = LlamaTokenizerFast(
        vocab=_with_specials(LLAMA_SPECIALS, vocab),
        merges=merges,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="right",  # as HunyuanVideo's; the template crop counts from the left
    )
    vocab, merges = _bpe(words, suffix=CLIP_WORD_END)
    clip = CLIPTokenizer(
        vocab=_with_specials(CLIP_SPECIALS, vocab), merges=merges, unk_token="<|endoftext|>"
    )
    return llama, clip


def build_vae(spec: VaeSpec, sizes: TinySizes = TinySizes()):
    """A random HunyuanVideo VAE (the real class) of `sizes`, with `spec`'s compression."""
    from diffusers import AutoencoderKLHunyuanVideo

    blocks = len(sizes.vae_channels)
    return AutoencoderKLHunyuanVideo(
        latent_channels=spec.latent_channels,
        down_block_types=("HunyuanVideoDownBlock3D",) * blocks,
        up_block_types=("HunyuanVideoUpBlock3D",) * blocks,
        block_out_channels=sizes.vae_channels,
        layers_per_block=sizes.vae_layers,
        norm_num_groups=sizes.vae_groups,
        mid_block_add_attention=sizes.vae_attention,
        spatial_compression_ratio=spec.spatial_compression,
        temporal_compression_ratio=spec.temporal_compression,
    )


def build_components(
    preset: Preset, words: Iterable[str], sizes: TinySizes = TinySizes(), seed: int = 0
) -> dict[str, Any]:
    """Random tiny components of the real classes, shaped to fit `preset`'s transformer.

    Built in a fixed order after seeding (the dict's), so a seed gives the same weights."""
    from fpk.model.loading import image_processor_class

    torch.manual_seed(seed)
    arch = preset.architecture
    tokenizer, tokenizer_2 = build_tokenizers(words)
    return {
        "transformer": FramePackTransformer(**transformer_config(arch, preset.schedule)),
        "vae": build_vae(preset.vae, sizes),
        "text_encoder": _llama(arch, len(tokenizer)),
        "tokenizer": tokenizer,
        "text_encoder_2": _clip(arch, len(tokenizer_2), sizes),
        "tokenizer_2": tokenizer_2,
        "image_encoder": _siglip(arch, sizes),
        "feature_extractor": image_processor_class()(
            size={"height": sizes.image_size, "width": sizes.image_size}
        ),
    }


def _llama(arch, vocab: int):
    from transformers import LlamaConfig, LlamaModel

    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=arch.text_embed_dim,
        intermediate_size=2 * arch.text_embed_dim,
        num_hidden_layers=LLAMA_LAYERS,
        num_attention_heads=TINY_HEADS,
        num_key_value_heads=TINY_HEADS,
        max_position_embeddings=512,
    )
    return LlamaModel(config)


def _clip(arch, vocab: int, sizes: TinySizes):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=arch.pooled_projection_dim,
        intermediate_size=2 * arch.pooled_projection_dim,
        num_hidden_layers=sizes.encoder_layers,
        num_attention_heads=TINY_HEADS,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return CLIPTextModel(config)


def _siglip(arch, sizes: TinySizes):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    config = SiglipVisionConfig(
        hidden_size=arch.image_proj_dim,
        intermediate_size=2 * arch.image_proj_dim,
        num_hidden_layers=sizes.encoder_layers,
        num_attention_heads=TINY_HEADS,
        image_size=sizes.image_size,
        patch_size=sizes.image_patch,
    )
    return SiglipVisionModel(config)


@torch.no_grad()
def salient_words(llama, std: float = 1.0) -> None:
    """Rescale the Llama's token embeddings to `std` (in place; idempotent).

    At the default initialisation (std 0.02) the hidden state fpk reads (layer -3) carries
    each word as a vector of norm ~0.16, under the transformer's `proj_in` bias (norm ~0.8):
    prompts then differ by ~1 % after the token refiner, and the tiny transformer never
    learned to read them (shuffling the prompts of a batch moved its output by 0.02 %). At
    std 1 the words dominate the features (refiner outputs differ by ~18 % across prompts).
    """
    weight = llama.get_input_embeddings().weight
    weight.mul_(std / weight.std())


def steady_norms(vae, offset: float = 20.0) -> None:
    """Initialise a small HunyuanVideo VAE so that its two output GroupNorms start benign.

    A GroupNorm divides by statistics of the whole clip. On the world's plain backgrounds
    those statistics are set by the background, so the norm before `conv_out` (encoder and
    decoder) scales each clip's features by a different, content-dependent factor: a small
    VAE trained from a random start learns the background and loses the object's colour
    (measured: stuck near 21 dB, chroma gone; the same network without norms passed 27 dB
    in the same steps). Here the last residual block before each of those norms adds +offset
    and -offset on two channels of every group: the pair dominates the group's variance and
    cancels in its mean, so the norm starts as a fixed scale that the norm's own weight
    undoes, and features pass through the residual stream as in a network without norms.
    Training is free to move away from it; the class and its config are unchanged.
    """
    pairs = (
        (vae.encoder.mid_block.resnets[-1].conv2.conv, vae.encoder.conv_norm_out),
        (vae.decoder.up_blocks[-1].resnets[-1].conv2.conv, vae.decoder.conv_norm_out),
    )
    with torch.no_grad():
        for conv, norm in pairs:
            per_group = norm.num_channels // norm.num_groups
            if per_group < 3:
                raise ValueError("steady_norms needs at least 3 channels a GroupNorm group")
            norm.weight.fill_(offset * (2 / per_group) ** 0.5)
            for g in range(norm.num_groups):
                a = g * per_group
                conv.bias[a], conv.bias[a + 1] = offset, -offset
                conv.weight[a : a + 2] = 0
                norm.weight[a : a + 2] = 1.0


def inflate_causal(vae) -> None:
    """Make a causal video VAE frame-wise: each causal convolution's temporal taps are summed
    into its last one (the current frame), as an image network is inflated to video.

    On a single frame nothing changes (a causal convolution sees copies of that frame in all
    its taps, so only the sum of the taps matters); on a clip every latent frame t becomes
    exactly the image latent of pixel frame 4t, and the decoder draws each latent frame's four
    pixel frames as that image. The world's objects then keep their shape and colour and sit
    where they are at every 4th frame; a decoder-only fine-tune (`fpk train --component vae
    --decoder-only`) then learns the frames between. Used on the tiny VAE, whose image-first
    training left taps that smear a moving object over several latent frames (measured: the
    object stayed at its start and faded while it should move).
    """
    from diffusers.models.autoencoders.autoencoder_kl_hunyuan_video import (
        HunyuanVideoCausalConv3d,
    )

    with torch.no_grad():
        for m in vae.modules():
            if isinstance(m, HunyuanVideoCausalConv3d) and m.conv.weight.shape[2] > 1:
                w = m.conv.weight
                total = w.sum(2)
                w.zero_()
                w[:, :, -1] = total


class Saveable(Protocol):
    """A model, tokenizer or processor: anything diffusers/transformers can save."""

    def save_pretrained(self, save_directory: Path, **kwargs: Any) -> Any: ...


def save_components(
    components: Mapping[str, Saveable], folder: Path, max_shard_size: str | None = None
) -> Path:
    """Save in the diffusers FramePack layout (`transformer/`, `vae/`, ...), safetensors only."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in components.items():
        kwargs: dict[str, Any] = {}
        if isinstance(part, torch.nn.Module):
            kwargs["safe_serialization"] = True
            if max_shard_size and name == "transformer":
                kwargs["max_shard_size"] = max_shard_size
        part.save_pretrained(folder / name, **kwargs)
    return folder


#: The tiny VAE's channel widths: small enough to train and encode quickly on a CPU.
TINY_VAE_CHANNELS = (16, 32, 64)
TINY_VAE_GROUPS = 2  # 8 to 32 channels a group: room for steady_norms' constant pair
#: No mid-block attention in the tiny VAE: it costs less per decoded frame, and the world has
#: nothing a 16x16 latent needs attention for.
TINY_VAE_ATTENTION = False


def ensure_components(preset: Preset, folder: Path, words: Iterable[str], seed: int = 0) -> None:
    """Random tiny components of the real classes in `folder`, unless already there, ready to
    train: steady VAE norms, salient words, the preset's schedule recorded."""
    if (folder / "vae" / "config.json").is_file():
        return
    comps = build_components(
        preset,
        words,
        TinySizes(
            vae_channels=TINY_VAE_CHANNELS,
            vae_groups=TINY_VAE_GROUPS,
            vae_attention=TINY_VAE_ATTENTION,
        ),
        seed,
    )
    steady_norms(comps["vae"])
    salient_words(comps["text_encoder"])
    comps["transformer"].register_to_config(fpk_schedule=preset.schedule.name)
    save_components(comps, folder)
