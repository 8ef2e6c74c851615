"""Shared fixtures: tiny real components, seeded."""

from __future__ import annotations

import pytest

TINY_ARCH = dict(
    num_attention_heads=2,
    attention_head_dim=8,
    num_layers=1,
    num_single_layers=1,
    num_refiner_layers=1,
    in_channels=4,
    out_channels=4,
    text_embed_dim=16,
    pooled_projection_dim=8,
    image_proj_dim=12,
    rope_axes_dim=(2, 2, 4),
)


@pytest.fixture
def tiny_arch() -> dict:
    return dict(TINY_ARCH)
