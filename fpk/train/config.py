"""What a training run is asked to do, and the progress it reports."""

from __future__ import annotations

from dataclasses import dataclass

from fpk import events as ev


@dataclass(frozen=True)
class TrainConfig:
    component: str = "transformer"
    steps: int = 1000
    batch: int = 8
    lr: float = 5e-4
    warmup: int = 200
    clip: float = 1.0
    ema: float = 0.999
    checkpoint_every: int = 500
    sample_every: int = 0
    scenes: int = 400
    seed: int = 0
    threads: int = 0
    decoder_only: bool = False  # VAE: keep the encoder (and so every latent) as it is
    inflate: bool = False  # VAE: start from fpk.model.tiny.inflate_causal of the loaded weights
    first_share: float = 0.0  # transformer: share of samples that are `sample_one(first=True)`


@dataclass(frozen=True)
class TrainProgress(ev.Event):
    step: int
    steps: int
    loss: float
    lr: float
    seconds: float
