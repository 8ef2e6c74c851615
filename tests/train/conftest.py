"""Fixtures of the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from fpk.config import load_preset

SMALL = """
[architecture]
num_attention_heads = 2
attention_head_dim = 16
num_layers = 1
num_single_layers = 1
num_refiner_layers = 1
"""


@pytest.fixture(scope="module")
def small_preset(tmp_path_factory):
    """The tiny preset at a smaller width: same world, same VAE, same schedule."""
    folder = tmp_path_factory.mktemp("preset")
    text = Path(load_preset("tiny").source).read_text()
    for line in SMALL.strip().splitlines()[1:]:
        key = line.split(" = ")[0]
        text = "\n".join(line if s.startswith(key + " =") else s for s in text.splitlines())
    text = text.replace("window = 5", "window = 2").replace(
        "rope_axes_dim = [8, 12, 12]", "rope_axes_dim = [4, 6, 6]"
    )
    (folder / "small.toml").write_text(text)
    return load_preset(str(folder / "small.toml"))
