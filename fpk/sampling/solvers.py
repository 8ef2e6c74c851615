"""Denoising one section: a small function in k-diffusion's shape.

`sample(model, x, sigmas, solver, callback, should_stop)`: `model(x, sigma)` returns the
predicted flow (noise - data, rectified flow); the solver is diffusers' scheduler for it
(UniPC for flow matching, the official default, or flow-matching Euler), stepped over the
FramePack sigmas of `fpk.sampling.sigmas`. Progress goes out through `callback`; the sampler
owns no UI.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from fpk.config import SOLVERS
from fpk.errors import UsageError

__all__ = ["SOLVERS", "Cancelled", "make_scheduler", "sample"]


class Cancelled(Exception):
    """Raised between steps when `should_stop()` says so."""


def make_scheduler(solver: str):
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    if solver == "unipc":
        return UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, solver_order=2
        )
    if solver == "euler":
        return FlowMatchEulerDiscreteScheduler()
    raise UsageError(f"unknown solver '{solver}' (valid: {', '.join(SOLVERS)})")


def sample(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    sigmas: list[float],
    solver: str = "unipc",
    callback: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """Integrate x from sigmas[0] (noise) to sigmas[-1] = 0 (data). x is float32."""
    scheduler = make_scheduler(solver)
    scheduler.set_timesteps(sigmas=np.array(sigmas[:-1]), device=x.device)
    steps = len(scheduler.timesteps)
    for i, t in enumerate(scheduler.timesteps):
        if should_stop is not None and should_stop():
            raise Cancelled
        # the model sees the continuous sigma (UniPC's own timesteps are rounded), in float64
        # so that its scaling to a timestep rounds once
        sigma = torch.full((x.shape[0],), sigmas[i], dtype=torch.float64)
        flow = model(x, sigma)
        x = scheduler.step(flow.float(), t, x, return_dict=False)[0]
        if callback is not None:
            callback(i + 1, steps)
    return x
