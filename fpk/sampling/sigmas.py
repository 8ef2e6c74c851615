"""Rectified-flow sigma schedule of FramePack: linspace(1, 0, n+1) time-shifted by mu.

mu grows linearly with the token count of the predicted section, from 0.5 at 256 tokens to
1.15 at 4096, capped at ln 7 (the official demo's `exp_max = 7`); the shift is the flux form
sigma' = e^mu / (e^mu + 1/sigma - 1). The solvers are diffusers' schedulers, fed these sigmas.
"""

from __future__ import annotations

import math

BASE_SEQ_LEN, MAX_SEQ_LEN = 256, 4096
BASE_SHIFT, MAX_SHIFT = 0.5, 1.15
MU_CAP = math.log(7.0)


def shift_mu(seq_len: float) -> float:
    """mu for `seq_len` predicted tokens, capped at ln 7."""
    slope = (MAX_SHIFT - BASE_SHIFT) / (MAX_SEQ_LEN - BASE_SEQ_LEN)
    return min(BASE_SHIFT + slope * (seq_len - BASE_SEQ_LEN), MU_CAP)


def base_sigmas(steps: int) -> list[float]:
    """linspace(1, 0, steps + 1) without its final 0: one sigma per step."""
    return [1 - i / steps for i in range(steps)]


def time_shift(sigma: float, mu: float) -> float:
    return math.exp(mu) / (math.exp(mu) + (1 / sigma - 1)) if sigma > 0 else 0.0


def flow_sigmas(steps: int, seq_len: float) -> list[float]:
    """The shifted sigmas of one section, then the final 0."""
    mu = shift_mu(seq_len)
    return [time_shift(s, mu) for s in base_sigmas(steps)] + [0.0]
