"""benchmarks/motion_probe.py scores each generated latent frame against the world's pixel
frame it stands for: a model that returns the truth scores ~0 px, one that freezes the last
known frame does not."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from fpk.synthetic import world

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "motion_probe.py"


@pytest.fixture(scope="module")
def probe():
    spec = importlib.util.spec_from_file_location("motion_probe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, module.tr.probe_task(module.EMBEDDED_DIR / "tiny", 1)


def _oracle(towards):
    """A flow that carries any noisy latent x at sigma s straight to `towards(item)`."""

    def flow(model, items, x, sigma, prompts):
        return (x - towards(items[0])[None]) / sigma.view(-1, 1, 1, 1, 1)

    return flow


def test_the_truth_scores_near_zero_and_a_frozen_object_does_not(probe, monkeypatch):
    module, task = probe
    scene = world.continuous_scene(world.HELD_OUT + 2)
    monkeypatch.setattr(task, "flow", _oracle(lambda item: item[3]))
    truth = module.summarize([module.probe_scene(task, scene, "vanilla", 2, seed=0)])
    assert truth["error"] < 1.0 and truth["solid"] == 1.0, truth
    assert len(truth["by_section"]) == module.SECTIONS
    assert set(truth["by_frame_ahead"]) == set(range(1, task.window + 1))

    def frozen(item):  # every target frame a copy of the latent frame before the section
        lat, target = item[0]["latents"], item[3]
        n = target.shape[1]
        start = next(t for t in range(1, lat.shape[1]) if lat[:, t : t + n].equal(target))
        return lat[:, start - 1 : start].expand_as(target)

    monkeypatch.setattr(task, "flow", _oracle(frozen))
    still = module.summarize([module.probe_scene(task, scene, "vanilla", 2, seed=0)])
    assert still["error"] > 8 * max(truth["error"], 0.5), (still, truth)
    assert still["by_frame_ahead"][5]["error"] > still["by_frame_ahead"][1]["error"]
