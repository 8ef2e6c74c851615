"""The optimiser's companions: the EMA of the weights (what ships) and the LR schedule."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

from fpk.errors import UsageError
from fpk.train.config import TrainConfig


class Ema:
    """Exponential moving average of a model's trainable parameters (what ships).

    Only the parameters that train are averaged (a LoRA run averages its adapters, not the
    frozen base weights); `applied()` swaps the averages into the model for exporting or
    sampling and puts the trained values back after. The decay warms up as
    min(decay, (1 + n) / (10 + n)) over its n updates, so that a short run's average is not
    dominated by the random initial weights.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.shadow = {n: p.detach().clone() for n, p in self.params.items()}
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, p in self.params.items():
            self.shadow[name].lerp_(p.detach(), 1 - decay)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the model for the block; the trained ones after it."""
        trained = {n: p.detach().clone() for n, p in self.params.items()}
        self._copy(self.shadow)
        try:
            yield
        finally:
            self._copy(trained)

    @torch.no_grad()
    def _copy(self, values: dict[str, torch.Tensor]) -> None:
        for name, p in self.params.items():
            p.copy_(values[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """The averages of a checkpoint (one of an older run may hold more keys: buffers and
        frozen weights, which are not averaged)."""
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise UsageError(
                f"--resume: the checkpoint has no average for {len(missing)} parameters, e.g. "
                f"{missing[0]}; was it made with other settings?"
            )
        with torch.no_grad():
            for name, value in self.shadow.items():
                value.copy_(state[name])


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, t))))
