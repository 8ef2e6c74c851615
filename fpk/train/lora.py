"""`fpk train --lora --data FOLDER`: a LoRA of the transformer trained on a user's clips.

The same task as full training (fpk.train.sections: one section per sample, with the packed
context and the sampling-order mix inference uses), over the folder's clips instead of the
world's scenes (fpk.train.data: captions, aspect-ratio buckets, each clip's own number of
sections). A batch is drawn from one bucket, so its latents share a shape. PEFT adds rank-R
adapters (alpha = R, so scale 1) to every Linear layer of the double- and single-stream
blocks, the layers HunyuanVideo LoRAs adapt (or to their attention projections only:
`--lora-layers attention`, TARGETS); the base weights stay frozen and are neither
averaged nor checkpointed. The EMA of the adapters is exported in diffusers/PEFT format
(`pytorch_lora_weights.safetensors`, keys `transformer.MODULE.lora_A.weight`), which
`fpk generate --lora` and other HunyuanVideo tools load.

`--reg-data FOLDER` (prior preservation, as DreamBooth and kohya's regularisation sets do it):
clips of what the base model already does right, in the same layout, with their own
captions; each sample is drawn from them with probability `--reg-share` (from the batch's
bucket; a bucket with no such clip draws from the training clips), so the adapters learn the
new clips' motion without unlearning what the base does for everything else.

`--shift-copies K`: each clip is also trained on as up to K copies of itself translated
(wrap-around, by multiples of the preset's token size) where nothing that moves crosses the
frame's edge (fpk.train.data.still_shifts), so that a few clips' motion is not learnt as
happening at their own places in the frame; a clip with no such shift (a moving camera) gets
none.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fpk.train.config import LORA_FILE, TrainConfig
from fpk.train.sections import SectionTask

ADAPTER = "default"
BLOCKS = r"(single_)?transformer_blocks\.\d+\.(.*\.)?"
ATTENTION = r"to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out"
#: `--lora-layers`: the blocks' Linear layers a LoRA adapts (never the embedders, the token
#: refiner or the final projection). "all": every one, as HunyuanVideo LoRAs do; "attention":
#: the attention projections of both streams only (not the MLPs, nor the single blocks'
#: proj_mlp / proj_out, which mix in the MLP), as motion LoRAs often do: attention moves
#: things between frames, the MLPs hold much of what they look like.
TARGETS = {
    "all": rf"{BLOCKS}({ATTENTION}|proj_mlp|proj_out|net\.0\.proj|net\.2)",
    "attention": rf"{BLOCKS}({ATTENTION})",
}


class LoraTask(SectionTask):
    """SectionTask over a data folder's clips, training adapters only (see module doc)."""

    def __init__(self, preset, comps, cfg: TrainConfig) -> None:
        from peft import LoraConfig

        model = comps.transformer
        model.requires_grad_(False)
        self.lora_config = LoraConfig(
            r=cfg.rank,
            lora_alpha=cfg.rank,
            target_modules=TARGETS[cfg.lora_layers],
            lora_dropout=cfg.lora_dropout,
            init_lora_weights=True,
        )
        model.add_adapter(self.lora_config, adapter_name=ADAPTER)
        for p in model.parameters():  # adapters (and their AdamW moments) in fp32 at any dtype
            if p.requires_grad:
                p.data = p.data.float()
        super().__init__(preset, comps, cfg)

    def encode_videos(self) -> list[dict]:
        from fpk.train.data import encode_clip, encode_pixels, find_clips, read_clip, shifted_copies

        assert self.cfg.data is not None
        self.clips = find_clips(self.cfg.data)
        flag = "--reg-data"
        reg = find_clips(self.cfg.reg_data, flag) if self.cfg.reg_data else []
        self.reg_videos = [encode_clip(self.comps, self.rt, c, self.window, flag) for c in reg]
        videos, step, copies = [], self.preset.resolution_multiple, self.cfg.shift_copies
        for clip in self.clips:
            pixels = read_clip(self.rt, clip, self.window)
            for frames in (pixels, *shifted_copies(pixels, copies, step, self.rng)):
                videos.append(encode_pixels(self.comps, self.rt, frames, clip.caption, self.window))
        return videos

    def batch_items(self) -> list:
        """A batch from one bucket: the bucket of a training clip drawn at random (so buckets
        come up as often as they hold clips), then every item from that bucket, a share
        `--reg-share` of them from its --reg-data clips (see module doc). A clip's
        `--shift-copies` are videos of their own here."""
        lead = self.rng.choice(self.videos)
        bucket = [v for v in self.videos if v["grid"] == lead["grid"]]
        reg = [v for v in self.reg_videos if v["grid"] == lead["grid"]]
        cfg = self.cfg
        items = []
        for _ in range(cfg.batch):
            pool = reg if reg and self.rng.random() < cfg.reg_share else bucket
            first = self.rng.random() < cfg.first_share
            items.append(self.sample_one(first=first, video=self.rng.choice(pool)))
        return items

    def state(self, model) -> dict[str, torch.Tensor]:
        """The adapters' weights only (the base model is the weights folder's)."""
        return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}

    def export(self, model, weights: Path, folder: Path) -> None:
        """The adapters in diffusers/PEFT format, in the run's `folder` (see module doc);
        the weights folder is not touched."""
        from diffusers.loaders import HunyuanVideoLoraLoaderMixin
        from peft import get_peft_model_state_dict

        layers = get_peft_model_state_dict(model, adapter_name=ADAPTER)
        HunyuanVideoLoraLoaderMixin.save_lora_weights(
            folder,
            transformer_lora_layers={k: v.detach().contiguous() for k, v in layers.items()},
            weight_name=LORA_FILE,
            transformer_lora_adapter_metadata=self.lora_config.to_dict(),
        )

    def sample_start(self) -> tuple:
        """The validation sample (see SectionTask.sample) starts from the first clip's first
        frame and caption, at the preset's settings."""
        first = self.videos[0]
        return first["first_frame"], first["prompt"], {}
