"""The optimiser's companions: the EMA of the weights (what ships) and the LR schedule."""

from __future__ import annotations

import copy
import math

import torch

from fpk.train.config import TrainConfig


class Ema(torch.nn.Module):
    """Exponential moving average of a model's parameters (a copy that ships).

    The decay warms up as min(decay, (1 + n) / (10 + n)) over its n updates, so that a short
    run's average is not dominated by the random initial weights.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for e, p in zip(self.model.parameters(), model.parameters(), strict=True):
            e.lerp_(p.detach(), 1 - decay)

    def state_dict(self, *args, **kwargs):  # the averaged model's own keys
        return self.model.state_dict(*args, **kwargs)

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        return self.model.load_state_dict(state, strict=strict)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, t))))
