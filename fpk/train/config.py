"""What a training run is asked to do, and the progress it reports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fpk import events as ev
from fpk.config import TRAIN_SEED
from fpk.errors import UsageError
from fpk.model.devices import dtype_name

TRAINABLE = ("vae", "transformer", "lora")
LORA_LAYERS = ("all", "attention")  # --lora-layers (fpk.train.lora.TARGETS)
LORA_FILE = "pytorch_lora_weights.safetensors"  # what a LoRA run exports (fpk.train.lora)


@dataclass(frozen=True)
class TrainConfig:
    """A run's settings, checked when made (a bad one is a UsageError naming the flag)."""

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
    seed: int = TRAIN_SEED
    threads: int = 0
    decoder_only: bool = False  # VAE: keep the encoder (and so every latent) as it is
    motion_loss: float = 0.0  # VAE: weight of the frame-difference L1 (VaeTask.reconstruction)
    inflate: bool = False  # VAE: start from fpk.model.tiny.inflate_causal of the loaded weights
    first_share: float = 0.0  # transformer: share of samples that are `sample_one(first=True)`
    continuous: int = 0  # continuous-motion scenes (seeds 0..N-1) beside --scenes (or the VAE's)
    start_share: float = 0.0  # transformer: share of steps on text-to-video start frames
    reverse_share: float = 0.0  # transformer: share of samples laid out as `extend --reverse`
    context_noise: float = 0.0  # transformer/lora: noise on the generated history's latents
    caption_dropout: float = 0.0  # transformer/lora: share of samples trained on the empty prompt
    data: Path | None = None  # lora: the folder of captioned clips
    rank: int = 16  # lora: the adapters' rank (alpha = rank)
    lora_layers: str = "all"  # lora: the layers adapted (fpk.train.lora.TARGETS)
    lora_dropout: float = 0.0  # lora: peft's dropout on the adapters' input, while training
    shift_copies: int = 0  # lora: translated copies of each clip (fpk.train.data.still_shifts)
    reg_data: Path | None = None  # lora: clips of what the base model already does (priors)
    reg_share: float = 0.25  # lora: share of samples drawn from --reg-data
    sampler: str | None = None  # sections of this order only, "ORDER[:PADDING]" (default: the mix)
    device: str | None = None  # where to train (default: cuda if there is a GPU, else cpu)
    dtype: str | None = None  # lora: the frozen weights' dtype (default bf16 on a GPU, else fp32)
    checkpointing: bool = False  # gradient checkpointing: recompute activations in backward

    def __post_init__(self) -> None:
        if self.component not in TRAINABLE:
            raise UsageError(f"--component '{self.component}' (valid: {', '.join(TRAINABLE)})")
        if (self.decoder_only or self.inflate or self.motion_loss) and self.component != "vae":
            raise UsageError("--decoder-only, --inflate and --motion-loss apply to --component vae")
        if self.motion_loss < 0:
            raise UsageError(f"--motion-loss {self.motion_loss}: give a weight, 0 or more")
        if self.steps < 1 or self.batch < 1 or self.scenes < 1:
            raise UsageError("--steps, --batch and --scenes must be at least 1")
        if (self.component == "lora") != (self.data is not None):
            raise UsageError("--lora trains on --data FOLDER (and --data only with --lora)")
        if self.reg_data is not None and self.component != "lora":
            raise UsageError("--reg-data applies to --lora (clips the LoRA must not change)")
        if self.lora_layers != "all" and self.component != "lora":
            raise UsageError("--lora-layers applies to --lora")
        if self.lora_layers not in LORA_LAYERS:
            raise UsageError(
                f"--lora-layers '{self.lora_layers}' (valid: {', '.join(LORA_LAYERS)})"
            )
        if self.lora_dropout and self.component != "lora":
            raise UsageError("--lora-dropout applies to --lora")
        if not 0 <= self.lora_dropout < 1:
            raise UsageError(f"--lora-dropout {self.lora_dropout}: give a rate from 0 to below 1")
        if self.shift_copies and self.component != "lora":
            raise UsageError("--shift-copies applies to --lora")
        if not 0 <= self.shift_copies <= 64:
            raise UsageError(f"--shift-copies {self.shift_copies}: give a count from 0 to 64")
        if not 1 <= self.rank <= 1024:
            raise UsageError(f"--rank {self.rank}: give a rank between 1 and 1024")
        shares = {"--first-share": self.first_share, "--start-share": self.start_share,
                  "--reverse-share": self.reverse_share, "--reg-share": self.reg_share}  # fmt: skip
        for flag, share in shares.items():
            if not 0 <= share <= 1:
                raise UsageError(f"{flag} {share}: give a share between 0 and 1")
        if self.first_share + self.reverse_share > 1:
            raise UsageError("--first-share and --reverse-share add up to more than 1")
        if not 0 <= self.context_noise <= 1:
            raise UsageError(f"--context-noise {self.context_noise}: give a level between 0 and 1")
        if self.context_noise and self.component == "vae":
            raise UsageError("--context-noise applies to the transformer and --lora")
        if not 0 <= self.caption_dropout < 1:
            raise UsageError(
                f"--caption-dropout {self.caption_dropout}: give a share from 0 to below 1"
            )
        if self.caption_dropout and self.component == "vae":
            raise UsageError("--caption-dropout applies to the transformer and --lora")
        if self.sampler is not None:
            self.order_padding()  # a bad name is a UsageError naming the valid ones
        if self.continuous < 0:
            raise UsageError(f"--continuous {self.continuous}: give a scene count, 0 or more")
        lower = self.dtype is not None and dtype_name(self.dtype) != "float32"  # checks the name
        if lower and self.component != "lora":
            raise UsageError(
                f"--dtype {self.dtype} applies to --lora (frozen weights in {self.dtype}, "
                "adapters in fp32); full training keeps fp32 weights"
            )

    def devices(self):
        """(torch device, dtype of the frozen weights): `--device` (default: cuda where there
        is a GPU); `--dtype` for a LoRA (default bf16 on a GPU, fp32 on a CPU; its adapters
        train in fp32), float32 for full training."""
        import torch

        from fpk.model.devices import pick_device, pick_dtype

        device = pick_device(self.device)
        if self.component != "lora":
            return device, torch.float32
        return device, pick_dtype(self.dtype, device)

    def order_padding(self) -> tuple[str, str] | None:
        """`--sampler ORDER[:PADDING]` as (order, padding); the padding defaults to the one the
        order is generated with by default (time-true for anti-drifting, else released)."""
        from fpk.sampling.orders import ORDERS, PADDINGS

        if self.sampler is None:
            return None
        order, _, padding = self.sampler.partition(":")
        padding = padding or ("time-true" if order == "anti-drifting" else "released")
        if order not in ORDERS or padding not in PADDINGS:
            raise UsageError(
                f"--sampler '{self.sampler}': give ORDER[:PADDING], ORDER one of "
                f"{', '.join(ORDERS)}, PADDING one of {', '.join(PADDINGS)}"
            )
        return order, padding


@dataclass(frozen=True)
class TrainProgress(ev.Event):
    step: int
    steps: int
    loss: float
    lr: float
    seconds: float
