"""oneDNN convolutions for the VAE on a CPU: the same function as nn.Conv3d, only faster."""

from __future__ import annotations

import copy

import pytest
import torch

from fpk.model.onednn import OneDnnConv3d, use_onednn


@pytest.mark.parametrize(
    "shape, kwargs",
    [
        ((1, 32, 33, 18, 18), {}),  # under PyTorch's oneDNN line: its native kernel by default
        ((2, 8, 5, 9, 7), {"stride": 2, "padding": 1}),
        ((1, 4, 6, 6, 6), {"dilation": 2, "groups": 2}),
    ],
)
def test_same_output_as_nn_conv3d(shape, kwargs):
    torch.manual_seed(0)
    plain = torch.nn.Conv3d(shape[1], 16 if "groups" not in kwargs else 4, 3, **kwargs)
    fast = use_onednn(copy.deepcopy(plain))
    assert type(fast) is OneDnnConv3d
    x = torch.randn(shape)
    with torch.no_grad():
        want, got = plain(x), fast(x)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)


def test_training_and_other_dtypes_take_nn_conv3d_itself():
    torch.manual_seed(0)
    plain = torch.nn.Conv3d(4, 4, 3)
    fast = use_onednn(copy.deepcopy(plain))
    x = torch.randn(1, 4, 5, 6, 6, requires_grad=True)
    fast(x).sum().backward()  # with a gradient: the nn.Conv3d path, which has one
    assert x.grad is not None and fast.weight.grad is not None
    with torch.no_grad():
        b = fast.to(torch.bfloat16)(x.detach().bfloat16())
    assert b.dtype == torch.bfloat16


def test_switch_keeps_the_weights_and_goes_back(tiny_saved):
    from fpk.model.loading import load_components

    preset, _, folder = tiny_saved
    vae = load_components(preset, folder).vae
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    z = torch.randn(1, vae.config.latent_channels, 3, 4, 4)
    with torch.no_grad():
        want = vae.decode(z).sample
        use_onednn(vae)
        assert any(type(m) is OneDnnConv3d for m in vae.modules())
        got = vae.decode(z).sample
    assert set(vae.state_dict()) == set(before)
    assert all(torch.equal(vae.state_dict()[k], v) for k, v in before.items())
    assert torch.allclose(got, want, atol=1e-5)
    use_onednn(vae, enabled=False)
    assert not any(isinstance(m, OneDnnConv3d) for m in vae.modules())


def test_runtime_sets_up_the_vae(tiny_saved):
    from fpk.model.loading import load_components
    from fpk.run.runtime import Runtime

    preset, _, folder = tiny_saved
    comps = load_components(preset, folder)
    Runtime(preset, comps, torch.device("cpu"), torch.float32)
    assert any(type(m) is OneDnnConv3d for m in comps.vae.modules())


def test_keep_freed_memory_is_safe_to_call_again():
    import platform

    from fpk.model.devices import keep_freed_memory

    first, again = keep_freed_memory(), keep_freed_memory()
    assert first == again
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert first is True
