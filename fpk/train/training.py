"""`fpk train`: train a preset's VAE or FramePack transformer on the synthetic world.

Transformer (FramePack sec. 3): each sample is one section of a world video, with the exact
context inference would give it: a sampling order drawn from inverted (released and
time-true padding), anti-drifting and vanilla, a random video length and a random place in
the order, packed by the preset's schedule through the same code as `fpk generate`
(fpk.model.context). So one model serves every order. Rectified-flow loss on the section's flow
(noise - data), sigma drawn as inference spaces it; AdamW, gradient clipping, an EMA of the
weights (what ships), checkpoints in safetensors (fpk.train.checkpoints) every N steps,
`--resume`, a gzip log (fpk.train.logs) and a sample video every N steps.

VAE: the real `AutoencoderKLHunyuanVideo` at a small size, trained on short world clips
(L1 + MSE + a small KL term); its `scaling_factor` is set so latents have unit variance.
`--inflate` makes it frame-wise first; `--decoder-only` keeps the encoder and the latents.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from fpk import events as ev
from fpk.config import Preset
from fpk.model.tiny import ensure_components
from fpk.synthetic import world
from fpk.train.checkpoints import (
    FINISHED,
    RESUME,
    load_checkpoint,
    require_checkpoint,
    resume_path,
    save_checkpoint,
)
from fpk.train.config import LORA_FILE, TrainConfig, TrainProgress
from fpk.train.logs import LOG, flush_log, plot_loss
from fpk.train.optim import Ema, lr_at
from fpk.train.sections import SectionTask, load
from fpk.train.vae import VaeTask

__all__ = ["LORA_FILE", "TrainConfig", "TrainProgress", "train"]


def train(
    preset: Preset,
    weights: Path,
    run: Path,
    cfg: TrainConfig,
    resume: bool = False,
    sink: ev.EventSink = ev.ignore,
    should_stop: Callable[[], bool] | None = None,
) -> Path:
    """Train `cfg.component` of `preset` in `weights` (created if missing); logs and
    checkpoints in `run`. Returns the finished run's checkpoint path."""
    folder = run / cfg.component
    if resume:  # before the task encodes its videos (minutes)
        require_checkpoint(resume_path(folder))
    task = _task(preset, weights, cfg)
    model = task.model.train()
    ema = Ema(model, cfg.ema)
    trainable = list(ema.params.values())
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=0.01)
    log_path = folder / LOG
    partial = cfg.component == "lora"
    start = load_checkpoint(resume_path(folder), model, ema, opt, partial) if resume else 0
    ema.updates = start
    if not resume:
        log_path.unlink(missing_ok=True)
    log: list[dict] = []
    t0 = time.perf_counter()
    saved = done = start
    for step in range(start, cfg.steps):
        if should_stop is not None and should_stop():
            break
        loss = _step(task, model, opt, trainable, step, cfg)
        ema.update()
        done = step + 1
        entry = {"step": done, "loss": round(loss, 5), "lr": lr_at(step, cfg),
                 "seconds": round(time.perf_counter() - t0, 2)}  # fmt: skip
        log.append(entry)
        sink(TrainProgress("train", done, cfg.steps, entry["loss"], entry["lr"],
                           entry["seconds"]))  # fmt: skip
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            saved = _save(task, model, ema, opt, weights, folder, done, log)
        if cfg.sample_every and done % cfg.sample_every == 0:
            with ema.applied(), _evaluating(model):
                task.sample(model, weights, folder / f"sample-{done:06d}.mp4")
    if done > saved:  # stopped between checkpoints: keep what was trained since the last
        _save(task, model, ema, opt, weights, folder, done, log)
    flush_log(log_path, log)
    plot_loss(log_path, folder / "loss.png")
    return folder / FINISHED


def _save(task, model, ema, opt, weights: Path, folder: Path, step: int, log: list[dict]) -> int:
    """The log flushed, both checkpoints (with and without the optimizer's moments) and the
    weights exported, at `step`; returns `step`."""
    last = log[-1:]
    flush_log(folder / LOG, log)
    state = task.state(model)
    save_checkpoint(folder / RESUME, state, ema, opt, step, last)
    save_checkpoint(folder / FINISHED, state, ema, None, step, last)
    with ema.applied() if task.ships_average else contextlib.nullcontext():
        task.export(model, weights, folder)
    return step


@contextlib.contextmanager
def _evaluating(model: torch.nn.Module) -> Iterator[None]:
    model.eval()
    try:
        yield
    finally:
        model.train()


def _task(preset: Preset, weights: Path, cfg: TrainConfig) -> VaeTask | SectionTask:
    """The component's task over the components in `weights` (random tiny ones if none; a
    LoRA needs trained ones)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    if cfg.component != "lora":
        ensure_components(preset, weights, world.vocabulary(), cfg.seed)
    comps = load(preset, weights, cfg.devices()[1])  # on the CPU; the task places them
    if cfg.component == "lora":
        from fpk.train.lora import LoraTask

        return LoraTask(preset, comps, cfg)
    if cfg.inflate:
        from fpk.model.tiny import inflate_causal

        inflate_causal(comps.vae)
    return VaeTask(comps, cfg) if cfg.component == "vae" else SectionTask(preset, comps, cfg)


def _step(task, model, opt, trainable, step: int, cfg: TrainConfig) -> float:
    """One optimiser step at the schedule's learning rate; the loss before it."""
    for group in opt.param_groups:
        group["lr"] = lr_at(step, cfg)
    loss = task.loss(model, step)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, cfg.clip)
    opt.step()
    return loss.item()
