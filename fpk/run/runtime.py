"""What every job of a batch shares: the loaded models, where they run, the prompt cache."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from fpk.config import Preset
from fpk.model import conditioning as cond
from fpk.model.devices import keep_freed_memory
from fpk.model.lora import LoraRef, LoraState
from fpk.model.onednn import use_onednn
from fpk.model.packing import Schedule

if TYPE_CHECKING:  # loading imports diffusers' models: only for the annotation
    from fpk.model.loading import Components


@dataclass
class Runtime:
    """What every job of a batch shares: the models, where they run, caches."""

    preset: Preset
    components: Components
    device: torch.device
    dtype: torch.dtype
    prompt_cache: dict[str, cond.PromptEmbeds] = field(default_factory=dict)
    loras: LoraState = field(default_factory=LoraState)

    def __post_init__(self) -> None:
        vae = self.components.vae
        if vae is not None:
            vae.use_framewise_decoding = self.preset.vae.framewise_decoding
            use_onednn(vae)
        if self.device.type == "cpu":
            keep_freed_memory()

    @property
    def schedule(self) -> Schedule:
        return self.components.schedule or self.preset.schedule

    @property
    def temporal(self) -> int:
        """Pixel frames a latent frame stands for (the VAE's temporal compression)."""
        return self.components.vae.config.temporal_compression_ratio

    def use_loras(self, loras: tuple[LoraRef, ...]) -> None:
        """Fuse a job's LoRAs into the transformer (unfusing the last job's; never reloading
        the base weights)."""
        self.loras.use(self.components.transformer, loras)

    def prompt(self, text: str) -> cond.PromptEmbeds:
        if text not in self.prompt_cache:
            self.prompt_cache[text] = cond.encode_prompt(
                self.components, text, self.device, self.dtype
            )
        return self.prompt_cache[text]
