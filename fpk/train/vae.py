"""Training the VAE on world clips (`fpk train --component vae`): image steps first, then
clips; `--inflate` and `--decoder-only` as the shipped tiny VAE was made (model card)."""

from __future__ import annotations

import types
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from fpk.synthetic import world
from fpk.train.config import TrainConfig


@contextmanager
def frames_as_images(vae):
    """Single frames through the causal VAE as the 2D network they amount to.

    A causal convolution pads time by replicating the first frame, so on a one-frame input its
    3x3x3 kernel sees three copies of that frame: exactly a 3x3 convolution with the kernel
    summed over time. Run that way (the same parameters, the same result, gradients
    included) an image step costs several times less on a CPU than the 3D convolution.
    """
    from diffusers.models.autoencoders.autoencoder_kl_hunyuan_video import (
        HunyuanVideoCausalConv3d,
    )

    def as_2d(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        if x.shape[2] != 1 or conv.padding != (0, 0, 0) or conv.dilation != (1, 1, 1):
            return type(self).forward(self, x)
        x = torch.nn.functional.pad(x[:, :, 0], self.time_causal_padding[:4], mode=self.pad_mode)
        return torch.nn.functional.conv2d(x, conv.weight.sum(2), conv.bias, conv.stride[1:])[
            :, :, None
        ]

    convs = [m for m in vae.modules() if isinstance(m, HunyuanVideoCausalConv3d)]
    for m in convs:
        m.forward = types.MethodType(as_2d, m)
    try:
        yield vae
    finally:
        for m in convs:
            del m.forward


class VaeTask:
    """Reconstruct world frames: L1 + MSE of the decoded posterior mean (fpk encodes with the
    mean), with a little latent noise so that the decoder tolerates imperfect latents, plus a
    small KL term that keeps the posterior's scale in check.

    Image first, as causal video VAEs are trained: the first IMAGE_FRACTION of the steps see
    single frames (4 x the batch; the causal VAE encodes a frame alone exactly as it encodes a
    clip's first frame), the rest 9-frame clips, so that the cheap steps teach shapes and
    colours and the dear ones motion within a latent frame. (Measured on the tiny VAE: 330
    clip steps did not get there; its latents smeared a moving object over several latent
    frames.) `--inflate` then makes the VAE frame-wise (`fpk.model.tiny.inflate_causal`) and
    `--decoder-only` trains the decoder alone on chunks decoded as `fpk generate` decodes
    them (`_chunk_loss`), which is how the shipped tiny VAE learned motion (model card).
    """

    CLIP = 9  # pixel frames: 1 + 4 * 2
    KL = 1e-6
    LATENT_NOISE = 0.05
    IMAGE_FRACTION = 0.7
    CHUNK = 3  # latent frames a decoder-only step decodes
    DECODER_STARTS = 8  # the world moves in its first ~25 pixel frames (latents 0..6)
    CONTINUOUS_FIRST = 96  # pixel frames: two round trips between the walls (every phase)

    def __init__(self, comps, cfg: TrainConfig) -> None:
        self.model = comps.vae
        self.model.use_framewise_encoding = self.model.use_framewise_decoding = False
        self.device = cfg.devices()[0]
        self.model.to(self.device)
        if cfg.checkpointing:
            self.model.enable_gradient_checkpointing()
        self.batch = max(1, cfg.batch // 4)
        self.decoder_only = cfg.decoder_only
        self.image_steps = 0 if cfg.decoder_only else int(cfg.steps * self.IMAGE_FRACTION)
        self.rng = np.random.default_rng(cfg.seed)
        self.continuous = cfg.continuous
        self.motion_loss = cfg.motion_loss
        self.continuous_share = cfg.continuous / (cfg.continuous + cfg.scenes)
        if cfg.decoder_only:
            for part in (self.model.encoder, self.model.quant_conv):
                part.requires_grad_(False)

    def scene(self, goal_first: int) -> tuple[world.Scene, int]:
        """A scene and the pixel frame its clip starts at: with probability --continuous /
        (--continuous + --scenes) one of the continuous-motion scenes 0 .. --continuous - 1
        from anywhere in its first CONTINUOUS_FIRST frames (it moves all the time: every
        phase of its motion), else a goal scene drawn anew from `goal_first` frames on."""
        if self.continuous and self.rng.random() < self.continuous_share:
            s = world.continuous_scene(int(self.rng.integers(self.continuous)))
            return s, int(self.rng.integers(0, self.CONTINUOUS_FIRST))
        return world.sample_scene(self.rng), int(self.rng.integers(0, goal_first))

    def clips(self, frames: int = CLIP, count: int | None = None) -> torch.Tensor:
        out = []
        for _ in range(count or self.batch):
            s, first = self.scene(40)
            out.append(torch.from_numpy(world.render(s, frames, first)))
        x = torch.stack(out).to(self.device).float() / 127.5 - 1  # (B, F, H, W, 3)
        return x.permute(0, 4, 1, 2, 3)

    def loss(self, vae, step: int = 0) -> torch.Tensor:
        if self.decoder_only:
            return self._chunk_loss(vae)
        if step < self.image_steps:
            with frames_as_images(vae):
                return self._loss(vae, self.clips(1, 4 * self.batch))
        return self._loss(vae, self.clips())

    def _chunk_loss(self, vae) -> torch.Tensor:
        """Decoder only, as `fpk generate` decodes: latents of a video encoded from its first
        frame, decoded from latent frame `a` on (the chunk's first latent stands for pixel
        frame 4a alone), against pixel frames 4a .. 4(a + CHUNK - 1). Starts are drawn where
        the world moves (its first DECODER_STARTS latent frames; continuous scenes from any
        frame of theirs, `scene`)."""
        from fpk.model import conditioning as cond

        t = self.model.config.temporal_compression_ratio
        xs, zs = [], []
        for _ in range(self.batch):
            s, first = self.scene(1)
            a = int(self.rng.integers(0, self.DECODER_STARTS))
            frames = world.render(s, 1 + t * (a + self.CHUNK - 1), first)
            x = cond.to_tensor(frames)[None].to(self.device)
            with torch.no_grad():
                zs.append(vae.encode(x).latent_dist.mode()[:, :, a:])
            xs.append(x[:, :, t * a :])
        x, z = torch.cat(xs), torch.cat(zs)
        y = vae.decode(z + self.LATENT_NOISE * z.std() * torch.randn_like(z)).sample
        return self.reconstruction(y, x)

    def reconstruction(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """L1 + MSE of decoded `y` against true `x` (B, C, F, H, W), plus --motion-loss times
        the L1 of their frame-to-frame differences: an object that stops for a frame and
        catches up later is a sub-pixel error to the per-pixel terms, but the whole of its
        move to this one."""
        loss = (y - x).abs().mean() + ((y - x) ** 2).mean()
        if self.motion_loss and x.shape[2] > 1:
            loss = loss + self.motion_loss * (y.diff(dim=2) - x.diff(dim=2)).abs().mean()
        return loss

    def _loss(self, vae, x: torch.Tensor) -> torch.Tensor:
        post = vae.encode(x).latent_dist
        z = post.mode()
        y = vae.decode(z + self.LATENT_NOISE * z.detach().std() * torch.randn_like(z)).sample
        return self.reconstruction(y, x) + self.KL * post.kl().mean()

    ships_average = False  # the VAE ships its raw weights: it trains briefly, the EMA lags

    def state(self, vae) -> dict[str, torch.Tensor]:
        return vae.state_dict()

    @torch.no_grad()
    def export(self, vae, weights: Path, folder: Path) -> None:
        """Save with scaling_factor = 1 / std of the latents, so that they are unit-variance."""
        if not self.decoder_only:  # the encoder, and so the latents' scale, are unchanged
            x = torch.cat([self.clips() for _ in range(4)])
            std = vae.encode(x).latent_dist.mode().std().item()
            vae.register_to_config(scaling_factor=round(1 / std, 6))
        vae.save_pretrained(weights / "vae", safe_serialization=True)

    def sample(self, vae, weights: Path, path: Path) -> None:
        """A reconstruction strip next to the source (PNG)."""
        from PIL import Image

        with torch.no_grad():
            x = self.clips()[:1]
            y = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        row = torch.cat([x[0], y[0]], dim=-2)  # (3, F, 2H, W)
        img = ((row.permute(2, 1, 3, 0).flatten(1, 2) + 1) * 127.5).byte().cpu().numpy()
        Image.fromarray(img).save(path.with_suffix(".png"))
