"""The sigma schedule equals what diffusers' flow-matching schedulers compute."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
from hypothesis import given
from hypothesis import strategies as st

from fpk.sampling.sigmas import MU_CAP, base_sigmas, flow_sigmas, shift_mu


def test_mu_endpoints_and_cap():
    assert shift_mu(256) == pytest.approx(0.5)
    assert shift_mu(4096) == pytest.approx(1.15)
    assert shift_mu(10**6) == MU_CAP == math.log(7)


@given(st.integers(1, 60), st.integers(16, 40_000))
def test_sigmas_monotone_in_unit_interval(steps, seq_len):
    s = flow_sigmas(steps, seq_len)
    assert s[0] == 1.0 and s[-1] == 0.0 and len(s) == steps + 1
    assert all(a > b for a, b in zip(s, s[1:], strict=False))


@pytest.mark.parametrize("steps, seq_len", [(25, 9 * 30 * 52), (25, 3 * 8 * 8), (10, 5000)])
def test_flow_match_euler_scheduler_computes_the_same(steps, seq_len):
    sched = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    sched.set_timesteps(sigmas=base_sigmas(steps), mu=shift_mu(seq_len))
    torch.testing.assert_close(
        sched.sigmas.double(), torch.tensor(flow_sigmas(steps, seq_len)).double(), rtol=0, atol=1e-6
    )


def test_unipc_flow_scheduler_computes_the_same():
    import numpy as np

    steps, seq_len = 25, 9 * 30 * 52
    sched = UniPCMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        use_dynamic_shifting=True,
        time_shift_type="exponential",
    )
    sched.set_timesteps(sigmas=np.array(base_sigmas(steps)), mu=shift_mu(seq_len))
    torch.testing.assert_close(
        torch.as_tensor(sched.sigmas).double(),
        torch.tensor(flow_sigmas(steps, seq_len)).double(),
        rtol=0,
        atol=2e-6,
    )
    # (UniPC keeps its first sigma a hair below 1, at 1 - 1e-6, to stay finite in log space)
