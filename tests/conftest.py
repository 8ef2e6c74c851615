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


WORDS = "a the red green blue circle square moves to top bottom left right corner and stops".split()


@pytest.fixture(scope="session")
def tiny_saved(tmp_path_factory):
    """Tiny random components of the real classes for the `tiny` preset, saved in the real
    layout (transformer sharded with an index); returns (preset, components, folder)."""
    from fpk.config import load_preset
    from fpk.model.tiny import build_components, save_components

    preset = load_preset("tiny")
    components = build_components(preset, WORDS, seed=0)
    with __import__("torch").no_grad():  # zero-initialised layers would hide bugs
        for p in components["transformer"].parameters():
            p.normal_(0, 0.1)
    folder = tmp_path_factory.mktemp("weights")
    save_components(components, folder, max_shard_size="500KB")
    return preset, components, folder
