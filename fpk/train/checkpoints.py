"""Training checkpoints in safetensors.

A run keeps two: `resume.safetensors` (model, EMA, AdamW moments: resumes exactly; ignored by
git) every `--checkpoint-every` steps, and at its end `checkpoint.safetensors` (model and EMA
only: what the repository keeps, one per shipped model). `--resume` takes the first where it
exists, else the second with fresh optimizer moments.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fpk.errors import UsageError

RESUME = "resume.safetensors"
FINISHED = "checkpoint.safetensors"


def resume_path(folder: Path) -> Path:
    """The checkpoint `--resume` continues from in a component's run folder."""
    full = folder / RESUME
    return full if full.is_file() else folder / FINISHED


def require_checkpoint(path: Path) -> None:
    """A UsageError naming `path` where `--resume` has nothing to continue from."""
    if not path.is_file():
        raise UsageError(f"--resume: no checkpoint at {path}; train without --resume first")


def save_checkpoint(
    path: Path, state: dict[str, torch.Tensor], ema, optimizer, step: int, log: list[dict]
) -> None:
    """The model's `state` (its state dict, or a LoRA run's adapter weights alone), the EMA's
    averages, and the optimizer's moments unless `optimizer` is None."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v for k, v in state.items()}
    tensors |= {f"ema.{k}": v for k, v in ema.state_dict().items()}
    state = optimizer.state_dict()["state"] if optimizer is not None else {}
    for i, moments in state.items():
        for name, value in moments.items():
            tensors[f"optim.{i}.{name}"] = torch.as_tensor(value)
    meta = {"step": str(step), "log": json.dumps(log[-1:])}
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=meta)
    tmp.replace(path)


def load_checkpoint(path: Path, model, ema, optimizer, partial: bool = False) -> int:
    """The step `path` was saved at, its weights loaded; a finished run's checkpoint carries
    no optimizer moments, so they start afresh. `partial`: the checkpoint holds some of the
    model's weights (a LoRA run's adapters), the rest stay as loaded."""
    from safetensors import safe_open

    require_checkpoint(path)
    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
        step = int(f.metadata()["step"])
        weights = {k[6:]: f.get_tensor(k) for k in keys if k.startswith("model.")}
        try:
            unexpected = model.load_state_dict(weights, strict=not partial).unexpected_keys
        except RuntimeError as err:  # other shapes: another --rank, another architecture
            raise UsageError(f"--resume: {path} was made with other settings ({err})") from None
        if unexpected:
            raise UsageError(f"--resume: {path} holds weights this run does not have")
        ema.load_state_dict({k[4:]: f.get_tensor(k) for k in keys if k.startswith("ema.")})
        state: dict[int, dict] = {}
        for k in (k for k in keys if k.startswith("optim.")):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = f.get_tensor(k)
    sd = optimizer.state_dict()
    sd["state"] = state
    optimizer.load_state_dict(sd)
    return step


def strip_checkpoint(path: Path, out: Path) -> None:
    """`path` without its optimizer moments (weights and metadata bit-identical) at `out`."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys() if not k.startswith("optim.")}
    tmp = out.with_name(out.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(out)
