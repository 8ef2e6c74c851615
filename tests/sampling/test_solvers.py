"""Solvers: with the exact flow of a point mass both recover the data; Euler is plain Euler."""

from __future__ import annotations

import pytest
import torch

from fpk.sampling.sigmas import flow_sigmas
from fpk.sampling.solvers import Cancelled, sample


def _exact_flow(x0):
    # x_t = (1 - s) x0 + s eps  =>  flow = eps - x0 = (x_t - x0) / s
    return lambda x, sigma: (x - x0) / sigma[0]


@pytest.mark.parametrize("solver", ["unipc", "euler"])
def test_exact_flow_recovers_data(solver):
    torch.manual_seed(0)
    x0, noise = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 4, 3, 8, 8)
    out = sample(_exact_flow(x0), noise, flow_sigmas(25, 3 * 16), solver)
    torch.testing.assert_close(out, x0, rtol=1e-4, atol=1e-4)


def test_euler_is_plain_euler_on_the_shifted_sigmas():
    torch.manual_seed(1)
    x = torch.randn(1, 2, 1, 4, 4)
    sigmas = flow_sigmas(10, 64)

    def model(x, sigma):
        return torch.sin(x) * sigma[0]

    want = x.clone()
    for s, s_next in zip(sigmas, sigmas[1:], strict=False):
        want = want + (s_next - s) * model(want, torch.tensor([s]))
    torch.testing.assert_close(sample(model, x, sigmas, "euler"), want, rtol=1e-5, atol=1e-6)


def test_progress_and_cancel():
    seen = []
    sample(
        lambda x, t: x,
        torch.zeros(1, 1, 1, 2, 2),
        flow_sigmas(5, 16),
        "euler",
        callback=lambda i, n: seen.append((i, n)),
    )
    assert seen == [(i, 5) for i in range(1, 6)]
    with pytest.raises(Cancelled):
        sample(
            lambda x, t: x,
            torch.zeros(1, 1, 1, 2, 2),
            flow_sigmas(5, 16),
            "euler",
            should_stop=lambda: True,
        )
