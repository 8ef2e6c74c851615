"""The packed FramePack transformer, built from diffusers' HunyuanVideo blocks.

What is ours (FramePack sec. 3): a history embedder with one patchify projection per distinct
kernel of the packing schedule, RoPE for compressed tokens pooled from the full-resolution grid
by their kernel, frame positions per sample (a batch may mix layouts and history lengths), and
replicate padding of kernels that do not divide the latent size. With the released layout the
state-dict keys are those of `lllyasviel/FramePackI2V_HY` (= diffusers'
`HunyuanVideoFramepackTransformer3DModel` with `has_clean_x_embedder` and `has_image_proj`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.cache_utils import CacheMixin
from diffusers.models.embeddings import get_1d_rotary_pos_embed
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import AdaLayerNormContinuous
from diffusers.models.transformers.transformer_hunyuan_video import (
    HunyuanVideoConditionEmbedding,
    HunyuanVideoPatchEmbed,
    HunyuanVideoSingleTransformerBlock,
    HunyuanVideoTokenRefiner,
    HunyuanVideoTransformerBlock,
)
from torch import nn

from fpk.config import Architecture
from fpk.model.packing import Kernel, PackPlan, Schedule, as_kernel

#: Projection names of the released checkpoints, by kernel.
RELEASED_PROJECTIONS: dict[Kernel, str] = {
    (1, 2, 2): "proj",
    (2, 4, 4): "proj_2x",
    (4, 8, 8): "proj_4x",
}

GroupMode = Literal["frames", "pool", "append"]


def projection_name(kernel: Sequence[int]) -> str:
    """'proj', 'proj_2x', 'proj_4x' for the released kernels, else e.g. 'proj_1x4x2'."""
    kt, kh, kw = key = as_kernel(kernel)
    return RELEASED_PROJECTIONS.get(key, f"proj_{kt}x{kh}x{kw}")


@dataclass
class ContextGroup:
    """Clean frames that enter the context under one kernel.

    `latents` (C, F, H, W) in ascending time, `positions` (F,) their timeline positions.
    mode "frames": patchified by `kernel`, kt frames per token group; "pool": all frames
    averaged into one (tail option 3); "append": each frame averaged to one token (option 2).
    """

    latents: torch.Tensor
    positions: torch.Tensor
    kernel: Kernel
    mode: GroupMode = "frames"


MODES: dict[str, GroupMode] = {"level": "frames", "tail-pool": "pool", "tail-append": "append"}


def groups_from_plan(plan: PackPlan, frames: Callable[[range], torch.Tensor]) -> list[ContextGroup]:
    """Context groups of a packing plan, least important first (the order diffusers uses).

    `frames(positions)` returns the latents (C, F, H, W) of real history frames at those
    timeline positions; zero-filled frames are added on the side away from the section.
    """
    out = []
    for group in reversed(plan.groups):
        real = plan.real_positions(group)
        latents = frames(real)
        if group.zero_frames:
            zeros = latents.new_zeros(latents.shape[0], group.zero_frames, *latents.shape[2:])
            latents = torch.cat([zeros, latents] if plan.step < 0 else [latents, zeros], dim=1)
        positions = torch.arange(group.positions.start, group.positions.stop)
        out.append(ContextGroup(latents, positions, group.kernel, MODES[group.role]))
    return out


def _pad_to_kernel(x: torch.Tensor, kernel: Sequence[int]) -> torch.Tensor:
    """Replicate-pad (..., T, H, W) at the end of each axis up to multiples of `kernel`."""
    pads = []
    for size, k in zip(reversed(x.shape[-3:]), reversed(kernel), strict=True):
        pads += [0, (k - size % k) % k]
    if not any(pads):
        return x
    squeeze = x.dim() == 4
    x = x.unsqueeze(0) if squeeze else x
    x = F.pad(x, pads, mode="replicate")
    return x.squeeze(0) if squeeze else x


class HistoryEmbedder(nn.Module):
    """One Conv3d patchify projection per distinct kernel (independent parameters).

    With `independent=False` every kernel shares the finest projection: the frames are first
    average-pooled by kernel / (1, p, p) so that the shared (1, p, p) projection applies.
    """

    def __init__(
        self,
        in_channels: int,
        inner_dim: int,
        kernels: Sequence[Kernel],
        patch: Kernel,
        independent: bool = True,
    ) -> None:
        super().__init__()
        self.patch = as_kernel(patch)
        self.independent = independent
        wanted = dict.fromkeys(map(as_kernel, kernels)) if independent else [self.patch]
        for kernel in wanted:
            conv = nn.Conv3d(in_channels, inner_dim, kernel_size=kernel, stride=kernel)
            self.add_module(projection_name(kernel), conv)

    def projection(self, kernel: Kernel) -> tuple[nn.Conv3d, Kernel]:
        """The conv for `kernel` and the kernel it applies to the (pre-pooled) latents."""
        if self.independent:
            return getattr(self, projection_name(kernel)), kernel
        return getattr(self, projection_name(self.patch)), self.patch

    def forward(self, group: ContextGroup) -> torch.Tensor:
        """Tokens (N, D) of one group."""
        x = group.latents  # (C, F, H, W)
        kernel = group.kernel
        if group.mode == "pool":
            x = x.mean(dim=1, keepdim=True)
            kernel = (1, *kernel[1:])
        elif group.mode == "append":
            x = x.mean(dim=(2, 3), keepdim=True)  # one latent pixel per frame
            kernel = (1, *kernel[1:])
            x = x.expand(-1, -1, kernel[1], kernel[2])
        conv, applied = self.projection(kernel)
        x = _pad_to_kernel(x, kernel)
        if applied != kernel:  # shared projection: pool down to the patch kernel first
            factor = tuple(k // a for k, a in zip(kernel, applied, strict=True))
            x = F.avg_pool3d(x.unsqueeze(0), factor, stride=factor).squeeze(0)
        x = conv(x.unsqueeze(0).to(conv.weight.dtype))  # (1, D, G, Hk, Wk)
        return x.flatten(2).transpose(1, 2).squeeze(0)


class PackedRope(nn.Module):
    """3-axis RoPE (t, h, w) on the patch grid; compressed tokens get the grid pooled by kernel.

    RoPE factorises by axis, so pooling the (t, h, w) grid by a kernel equals pooling the t
    channels over the frames of a group and the h / w channels over the rows / columns it
    covers: the same numbers as diffusers' 3-D avg-pool of the full grid, computed in O(T+H+W).
    """

    def __init__(self, patch: int, axes_dim: Sequence[int], theta: float) -> None:
        super().__init__()
        self.patch = patch
        self.axes_dim = tuple(axes_dim)
        self.theta = theta

    def _axis(
        self, axis: int, positions: torch.Tensor, block: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (N // block, dim) of `positions`, averaged in blocks (replicate-padded)."""
        cos, sin = get_1d_rotary_pos_embed(
            self.axes_dim[axis], positions.float(), self.theta, use_real=True
        )
        if block == 1:
            return cos, sin
        pad = (block - positions.numel() % block) % block
        cos, sin = (torch.cat([c, c[-1:].expand(pad, -1)]) if pad else c for c in (cos, sin))
        return cos.unflatten(0, (-1, block)).mean(1), sin.unflatten(0, (-1, block)).mean(1)

    def forward(
        self,
        positions: torch.Tensor,
        height: int,
        width: int,
        kernel: Sequence[int],
        mode: GroupMode = "frames",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (tokens, head_dim) of a group of frames at `positions` on a latent H x W."""
        kt, kh, kw = kernel
        device = positions.device
        rows = torch.arange(height // self.patch, device=device)
        cols = torch.arange(width // self.patch, device=device)
        t_block = {"frames": kt, "pool": positions.numel(), "append": 1}[mode]
        t = self._axis(0, positions, t_block)
        h = self._axis(1, rows, max(1, kh // self.patch))
        w = self._axis(2, cols, max(1, kw // self.patch))
        return _outer3(t[0], h[0], w[0]), _outer3(t[1], h[1], w[1])


def _outer3(t: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Concatenate per-axis channels over the (T, H, W) grid, flattened t-major: (T*H*W, D)."""
    nt, nh, nw = t.shape[0], h.shape[0], w.shape[0]
    return torch.cat(
        [
            t[:, None, None].expand(nt, nh, nw, -1),
            h[None, :, None].expand(nt, nh, nw, -1),
            w[None, None, :].expand(nt, nh, nw, -1),
        ],
        dim=-1,
    ).flatten(0, 2)


class PackedAttnProcessor:
    """HunyuanVideo joint attention with RoPE given per sample: cos, sin of shape (B, N, D).

    diffusers' processor takes one (N, D) RoPE for the whole batch; ours lets every sample
    carry its own layout. Same arithmetic otherwise (rotation in float32), the attention itself
    through diffusers' dispatcher, so that `set_attention_backend` (`--attention`) picks the
    kernel: torch's SDPA by default, flash-attention, SageAttention, xformers, ...
    """

    _attention_backend = None  # set by ModelMixin.set_attention_backend
    _parallel_config = None

    def __call__(
        self,
        attn,
        hidden_states,
        encoder_hidden_states=None,
        attention_mask=None,
        image_rotary_emb=None,
    ):
        n_text = encoder_hidden_states.shape[1]
        single_stream = attn.add_q_proj is None
        if single_stream:
            hidden_states = torch.cat([hidden_states, encoder_hidden_states], dim=1)
        q, k, v = (
            proj(hidden_states).unflatten(2, (attn.heads, -1))
            for proj in (attn.to_q, attn.to_k, attn.to_v)
        )  # (B, N, H, d)
        q, k = attn.norm_q(q), attn.norm_k(k)
        if image_rotary_emb is not None:
            n_img = q.shape[1] - n_text if single_stream else q.shape[1]
            q = torch.cat([_rotate(q[:, :n_img], image_rotary_emb), q[:, n_img:]], dim=1)
            k = torch.cat([_rotate(k[:, :n_img], image_rotary_emb), k[:, n_img:]], dim=1)
        if not single_stream:
            eq, ek, ev = (
                proj(encoder_hidden_states).unflatten(2, (attn.heads, -1))
                for proj in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj)
            )
            q = torch.cat([q, attn.norm_added_q(eq)], dim=1)
            k = torch.cat([k, attn.norm_added_k(ek)], dim=1)
            v = torch.cat([v, ev], dim=1)
        out = dispatch_attention_fn(
            q, k, v, attn_mask=attention_mask, backend=self._attention_backend
        )  # (B, N, H, d) in and out
        out = out.flatten(2, 3).to(q.dtype)
        img, txt = out[:, :-n_text], out[:, -n_text:]
        if getattr(attn, "to_out", None) is not None:
            img = attn.to_out[1](attn.to_out[0](img))
        if getattr(attn, "to_add_out", None) is not None:
            txt = attn.to_add_out(txt)
        return img, txt


def _rotate(x: torch.Tensor, freqs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Apply RoPE to x (B, N, H, d) with cos, sin (B, N, d): pairs (real, imag) interleaved."""
    cos, sin = (f[:, :, None, :] for f in freqs)
    real, imag = x.reshape(*x.shape[:-1], -1, 2).unbind(-1)
    rotated = torch.stack([-imag, real], dim=-1).flatten(3)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class FramePackTransformer(ModelMixin, ConfigMixin, PeftAdapterMixin, CacheMixin):
    """HunyuanVideo dual/single-stream transformer with a packed history context; LoRAs load
    through diffusers' PEFT integration (fpk.model.lora)."""

    _supports_gradient_checkpointing = True
    _no_split_modules = ["HunyuanVideoTransformerBlock", "HunyuanVideoSingleTransformerBlock"]
    # --fp8 (layerwise casting) keeps these in the compute dtype, as diffusers' FramePack model
    # does ("x_embedder" also matches clean_x_embedder, the history projections)
    _skip_layerwise_casting_patterns = ["x_embedder", "context_embedder", "norm"]
    # --compile: diffusers' regional compilation compiles each of these blocks, not the model
    _repeated_blocks = ["HunyuanVideoTransformerBlock", "HunyuanVideoSingleTransformerBlock"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 16,
        out_channels: int = 16,
        num_attention_heads: int = 24,
        attention_head_dim: int = 128,
        num_layers: int = 20,
        num_single_layers: int = 40,
        num_refiner_layers: int = 2,
        mlp_ratio: float = 4.0,
        patch_size: int = 2,
        patch_size_t: int = 1,
        qk_norm: str = "rms_norm",
        guidance_embeds: bool = True,
        text_embed_dim: int = 4096,
        pooled_projection_dim: int = 768,
        rope_theta: float = 256.0,
        rope_axes_dim: tuple[int, ...] = (16, 56, 56),
        image_proj_dim: int = 1152,
        history_kernels: tuple[tuple[int, int, int], ...] = ((1, 2, 2), (2, 4, 4), (4, 8, 8)),
        history_independent: bool = True,
    ) -> None:
        super().__init__()
        inner = num_attention_heads * attention_head_dim
        patch: Kernel = (patch_size_t, patch_size, patch_size)
        self.x_embedder = HunyuanVideoPatchEmbed(patch, in_channels, inner)
        self.clean_x_embedder = HistoryEmbedder(
            in_channels, inner, [as_kernel(k) for k in history_kernels], patch, history_independent
        )
        self.context_embedder = HunyuanVideoTokenRefiner(
            text_embed_dim, num_attention_heads, attention_head_dim, num_layers=num_refiner_layers
        )
        self.image_projection = ImageProjection(image_proj_dim, inner)
        self.time_text_embed = HunyuanVideoConditionEmbedding(
            inner, pooled_projection_dim, guidance_embeds
        )
        self.rope = PackedRope(patch_size, rope_axes_dim, rope_theta)
        self.transformer_blocks = nn.ModuleList(
            HunyuanVideoTransformerBlock(
                num_attention_heads, attention_head_dim, mlp_ratio=mlp_ratio, qk_norm=qk_norm
            )
            for _ in range(num_layers)
        )
        self.single_transformer_blocks = nn.ModuleList(
            HunyuanVideoSingleTransformerBlock(
                num_attention_heads, attention_head_dim, mlp_ratio=mlp_ratio, qk_norm=qk_norm
            )
            for _ in range(num_single_layers)
        )
        self.norm_out = AdaLayerNormContinuous(inner, inner, elementwise_affine=False, eps=1e-6)
        self.proj_out = nn.Linear(inner, patch_size_t * patch_size * patch_size * out_channels)
        processor = self._packed_attention = PackedAttnProcessor()
        for block in [*self.transformer_blocks, *self.single_transformer_blocks]:
            block.attn.set_processor(processor)
        self.gradient_checkpointing = False

    def forward(
        self,
        hidden_states: torch.Tensor,  # (B, C, S, H, W) noisy target latents
        timestep: torch.Tensor,  # (B,)
        encoder_hidden_states: torch.Tensor,  # (B, L, text_embed_dim)
        encoder_attention_mask: torch.Tensor,  # (B, L)
        pooled_projections: torch.Tensor,  # (B, pooled_projection_dim)
        image_embeds: torch.Tensor,  # (B, I, image_proj_dim)
        target_positions: torch.Tensor,  # (B, S) timeline positions of the targets
        context: Sequence[Sequence[ContextGroup]],  # per sample, least important first
        guidance: torch.Tensor | None = None,  # (B,), already x1000
        prepared: PreparedSection | None = None,  # `prepare` of this section (no grad)
    ) -> torch.Tensor:
        """Predicted flow (B, C, S, H, W) for the target frames."""
        batch, _, frames, height, width = hidden_states.shape
        p = self.config.patch_size
        targets = self.x_embedder(hidden_states)  # (B, S*h*w, D)
        tokens, rope, valid = self.embed_sequence(
            targets, target_positions, context, height, width, prepared
        )
        temb, _ = self.time_text_embed(timestep, pooled_projections, guidance)
        text = self.context_embedder(encoder_hidden_states, timestep, encoder_attention_mask)
        image = self.image_projection(image_embeds)
        text = torch.cat([image, text], dim=1)
        text_mask = torch.cat(
            [encoder_attention_mask.new_ones(image.shape[:2]), encoder_attention_mask], 1
        )
        mask = torch.cat([valid, text_mask.bool()], dim=1)[:, None, None, :]  # (B, 1, 1, N)
        if bool(mask.all()):  # nothing padded: no mask, which every attention kernel takes
            mask = None
        tokens = self._blocks(tokens, text, temb, mask, rope)
        out = self.proj_out(self.norm_out(tokens[:, -targets.shape[1] :], temb))
        out = out.reshape(batch, frames, height // p, width // p, -1, 1, p, p)
        return out.permute(0, 4, 1, 5, 2, 6, 3, 7).flatten(6, 7).flatten(4, 5).flatten(2, 3)

    def set_attention_backend(self, backend: str) -> None:
        """This model's blocks attend with diffusers' `backend` (its requirement check first).
        Unlike diffusers' own method, the process-wide default stays as it is: a backend
        chosen for one model must not leak into another (or into a parity test)."""
        from diffusers.models.attention_dispatch import (
            AttentionBackendName,
            _check_attention_backend_requirements,
        )

        name = AttentionBackendName(backend.lower())
        _check_attention_backend_requirements(name)
        self._packed_attention._attention_backend = name

    def _blocks(self, tokens, text, temb, mask, rope) -> torch.Tensor:
        """The dual- then single-stream blocks; under TeaCache (fpk.model.caching, set per
        call) a step whose first-block input barely changed reuses the last residual."""
        tea = getattr(self, "_fpk_teacache", None)
        if tea is not None:
            modulated = self.transformer_blocks[0].norm1(tokens, emb=temb)[0]
            if tea.skip(modulated):
                return tokens + tea.residual
            before = tokens
        for block in [*self.transformer_blocks, *self.single_transformer_blocks]:
            args = (tokens, text, temb, mask, rope)
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                tokens, text = self._gradient_checkpointing_func(block, *args)
            else:
                tokens, text = block(*args)
        if tea is not None:
            tea.residual = tokens - before
        return tokens

    def embed_sequence(self, targets, target_positions, context, height, width, prepared=None):
        """Left-padded token sequences [context..., targets] with RoPE and a validity mask;
        `prepared` (from `prepare`, the same section) skips what does not change per step."""
        prepared = prepared or self.prepare(target_positions, context, height, width)
        seqs = [torch.cat([ctx, targets[b]]) for b, ctx in enumerate(prepared.context_tokens)]
        n = prepared.valid.shape[1]
        tokens = torch.stack([F.pad(s, (0, 0, n - s.shape[0], 0)) for s in seqs])
        return tokens, prepared.rope, prepared.valid

    def prepare(self, target_positions, context, height, width) -> PreparedSection:
        """What stays fixed while a section denoises: its packed context's tokens, the RoPE of
        context and targets, the validity mask (FramePack recomputes none of it per step)."""
        patch: Kernel = (self.config.patch_size_t, self.config.patch_size, self.config.patch_size)
        p = self.config.patch_size
        target_len = target_positions.shape[1] * (height // p) * (width // p)
        parts, ropes = [], []
        for b in range(target_positions.shape[0]):
            groups = [self.clean_x_embedder(g) for g in context[b]]
            weight = self.proj_out.weight  # no context (a text-to-video start frame): no tokens
            parts.append(torch.cat(groups) if groups else weight.new_zeros(0, weight.shape[1]))
            freqs = [self.rope(g.positions, height, width, g.kernel, g.mode) for g in context[b]]
            freqs.append(self.rope(target_positions[b], height, width, patch))
            ropes.append([torch.cat([f[i] for f in freqs]) for i in range(2)])
        device = parts[0].device
        n = max(c.shape[0] for c in parts) + target_len
        valid = torch.zeros(len(parts), n, dtype=torch.bool, device=device)
        for b, c in enumerate(parts):
            valid[b, n - c.shape[0] - target_len :] = True
        rope = tuple(
            torch.stack([F.pad(r[i], (0, 0, n - r[i].shape[0], 0)) for r in ropes]).to(device)
            for i in range(2)
        )
        return PreparedSection(parts, rope, valid)


@dataclass(frozen=True)
class PreparedSection:
    """`FramePackTransformer.prepare`'s result: per-sample context tokens, RoPE, mask."""

    context_tokens: list[torch.Tensor]
    rope: tuple[torch.Tensor, ...]
    valid: torch.Tensor


class ImageProjection(nn.Module):
    """SigLIP features into the text stream (keys `image_projection.up/down` as released)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.Linear(in_channels, out_channels * 3)
        self.down = nn.Linear(out_channels * 3, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.up(x)))


def transformer_config(arch: Architecture, schedule: Schedule) -> dict:
    """The FramePackTransformer config for a preset's architecture and packing schedule."""
    return {
        "in_channels": arch.in_channels,
        "out_channels": arch.out_channels,
        "num_attention_heads": arch.num_attention_heads,
        "attention_head_dim": arch.attention_head_dim,
        "num_layers": arch.num_layers,
        "num_single_layers": arch.num_single_layers,
        "num_refiner_layers": arch.num_refiner_layers,
        "mlp_ratio": arch.mlp_ratio,
        "patch_size": arch.patch_size,
        "patch_size_t": arch.patch_size_t,
        "text_embed_dim": arch.text_embed_dim,
        "pooled_projection_dim": arch.pooled_projection_dim,
        "rope_theta": arch.rope_theta,
        "rope_axes_dim": tuple(arch.rope_axes_dim),
        "image_proj_dim": arch.image_proj_dim,
        "history_kernels": tuple(schedule.kernels),
        "history_independent": schedule.independent,
    }


def count_parameters(arch: Architecture, schedule: Schedule) -> int:
    """Parameters of the architecture, instantiated on the meta device (no memory allocated)."""
    with torch.device("meta"):
        model = FramePackTransformer(**transformer_config(arch, schedule))
    return sum(p.numel() for p in model.parameters())


def inflate_projection(source: nn.Conv3d, target: nn.Conv3d) -> None:
    """Initialise `target` from a projection of another kernel (FramePack's recipe).

    The source kernel is resampled to the target's size (nearest-neighbour repeat, as the
    official code inflates `proj` into `proj_2x`/`proj_4x`; trilinear where sizes do not
    divide) and divided by the volume ratio, so a constant input maps to the same token.
    """
    src = source.weight.detach().float()
    size = target.weight.shape[2:]
    if all(t % s == 0 for t, s in zip(size, src.shape[2:], strict=True)):
        for dim, (t, s) in enumerate(zip(size, src.shape[2:], strict=True)):
            src = src.repeat_interleave(t // s, dim=2 + dim)
    else:
        src = F.interpolate(src, size=tuple(size), mode="trilinear", align_corners=False)
    volume = math.prod(size) / math.prod(source.weight.shape[2:])
    with torch.no_grad():
        target.weight.copy_((src / volume).to(target.weight.dtype))
        target.bias.copy_(source.bias.detach().to(target.bias.dtype))
