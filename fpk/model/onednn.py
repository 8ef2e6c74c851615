"""oneDNN's convolution for the VAE on a CPU.

PyTorch sends a batch-1 float32 convolution with a 3x3 kernel to its native kernel unless
N*C*D*H of the input exceeds 20480 ("for some cases, native is faster"). The VAE's
lower-resolution layers fall under that line and there the native path is about 5x slower than
oneDNN's (a (1, 32, 33, 18, 18) input, 32 channels out, 2 threads: 4.8 ms vs 0.9 ms), half of
a tiny decode's time. `use_onednn` turns a module's Conv3d layers into `OneDnnConv3d`, which
asks for oneDNN by name where it applies and is nn.Conv3d itself everywhere else (GPU, other
dtypes, training), with the same parameters and state-dict keys.
"""

from __future__ import annotations

import torch


class OneDnnConv3d(torch.nn.Conv3d):
    """nn.Conv3d that takes oneDNN's kernel on a CPU in float32 when no gradient is taken."""

    def _conv_forward(self, input, weight, bias):
        if (
            input.device.type == "cpu"
            and input.dtype == weight.dtype == torch.float32
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and not torch.is_grad_enabled()
            and torch.backends.mkldnn.enabled
            and torch.backends.mkldnn.is_available()
        ):
            return torch.mkldnn_convolution(
                input, weight, bias, self.padding, self.stride, self.dilation, self.groups
            )
        return super()._conv_forward(input, weight, bias)


def use_onednn(module: torch.nn.Module, enabled: bool = True) -> torch.nn.Module:
    """Make every plain nn.Conv3d of `module` a OneDnnConv3d, or with `enabled` False every
    OneDnnConv3d a plain nn.Conv3d again (in place; returns `module`)."""
    old, new = (torch.nn.Conv3d, OneDnnConv3d) if enabled else (OneDnnConv3d, torch.nn.Conv3d)
    for layer in module.modules():
        if type(layer) is old:
            layer.__class__ = new
    return module
