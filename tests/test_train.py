"""`fpk train` on the synthetic world: a few steps, the loss falls, checkpoints resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fpk.config import load_preset
from fpk.train import TrainConfig, train

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


def _losses(run: Path, component: str) -> list[float]:
    path = run / component / "log.jsonl"
    return [json.loads(line)["loss"] for line in path.read_text().splitlines()]


def test_transformer_loss_falls_and_resumes(small_preset, tmp_path):
    cfg = TrainConfig(steps=20, batch=4, scenes=3, lr=3e-3, warmup=2, checkpoint_every=10)
    weights, runs = tmp_path / "w", tmp_path / "run"
    ckpt = train(small_preset, weights, runs, cfg)
    losses = _losses(runs, "transformer")
    assert len(losses) == 20 and ckpt.is_file()
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
    assert (weights / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    longer = TrainConfig(**{**cfg.__dict__, "steps": 23})
    train(small_preset, weights, runs, longer, resume=True)
    assert [json.loads(x)["step"] for x in (runs / "transformer" / "log.jsonl").open()][-1] == 23


def test_vae_trains_and_sets_its_scaling_factor(small_preset, tmp_path):
    cfg = TrainConfig(component="vae", steps=3, batch=4, checkpoint_every=3)
    train(small_preset, tmp_path / "w", tmp_path / "run", cfg)
    config = json.loads((tmp_path / "w" / "vae" / "config.json").read_text())
    assert config["scaling_factor"] != 0.476986  # measured, not the default
    assert len(_losses(tmp_path / "run", "vae")) == 3
