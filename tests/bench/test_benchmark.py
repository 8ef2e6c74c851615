"""`fpk benchmark` at a tiny size on random components: every part runs, the report keeps its
schema, the plots are PNGs, and the arithmetic of wins and drift holds."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from fpk.bench import benchmark as bm
from fpk.synthetic import metrics


@pytest.fixture(scope="module")
def runtime(tiny_saved):
    from fpk.model.loading import load_components
    from fpk.run.runtime import Runtime

    preset, _, folder = tiny_saved
    return Runtime(preset, load_components(preset, folder), torch.device("cpu"), torch.float32)


def test_every_part_writes_report_and_plots(runtime, tmp_path):
    plan = replace(bm.make_plan("all", True, 1, None), windows=(2,), seconds=1.0, steps=1,
                   sections=(1, 3), time_cap=60.0)  # fmt: skip
    fake = lambda steps, sections, runs, sink: {  # noqa: E731 (measured in its own test)
        "fpk_seconds": 1.0,
        "diffusers_seconds": 2.0,
        "speedup": 2.0,
        "runs": runs,
        "sections": sections,
        "steps": steps,
        "fpk_all": [1.0],
        "diffusers_all": [2.0],
    }
    report = bm.run(runtime, plan, tmp_path, diffusers_fn=fake)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["schema"] == "fpk.benchmark/1"
    assert set(saved) >= {"quality", "packing", "section_cost", "diffusers", "plots", "seconds"}
    q = saved["quality"]["summary"]
    assert set(q["wins"]) == set(bm.ORDERS)
    assert sum(w["best_mean"] for w in q["wins"].values()) == len(metrics.METRICS)
    cost = saved["packing"]["cost"]
    assert [r["section"] for r in cost["full context"]["rows"]] == [1, 3]
    geo = cost["geometric"]["rows"]
    assert cost["full context"]["rows"][-1]["tokens"] > geo[-1]["tokens"]
    for name in report["plots"]:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_against_diffusers_measures_both(tmp_path):
    result = bm.against_diffusers(steps=1, sections=1, runs=1, sink=lambda e: None)
    assert result["fpk_seconds"] > 0 and result["diffusers_seconds"] > 0
    assert result["speedup"] == pytest.approx(
        result["diffusers_seconds"] / result["fpk_seconds"], rel=1e-2
    )
    assert result["speedup_same_vae"] == pytest.approx(
        result["diffusers_same_vae_seconds"] / result["fpk_seconds"], rel=1e-2
    )
    frames = result["diffusers_seconds"] - result["diffusers_write_seconds"]
    assert result["diffusers_frames_seconds"] == pytest.approx(frames, rel=1e-2, abs=1e-3)


def test_both_sides_of_the_comparison_write_the_same_video(tmp_path):
    """Identical work: the same frames count and size in an mp4 from each runner."""
    from fpk.bench.comparison import diffusers_runner, fpk_runner, released_components
    from fpk.media.video import read_video

    rt, image = released_components(tmp_path)
    fpk_runner(rt, image, 2, 1, tmp_path / "a")()
    assert diffusers_runner(rt, image, 2, 1, tmp_path / "b")() > 0
    ours, _, fps = read_video(tmp_path / "a" / "fpk.mp4")
    theirs, _, their_fps = read_video(tmp_path / "b" / "diffusers.mp4")
    assert ours.shape == theirs.shape and fps == their_fps


def test_drift_and_wins_arithmetic():
    assert metrics.drift([10, 10, 10, 10, 10, 10, 0]) == pytest.approx(-5)  # thirds: 2 s
    assert metrics.drift([10.0] * 10 + [7.0] * 40 + [4.0] * 10) == pytest.approx(-6)  # 10 s
    summary = {
        s: {m: {"mean": v, "drift": d} for m in metrics.METRICS}
        for s, v, d in (("vanilla", 1.0, -5.0), ("inverted", 2.0, -1.0))
    }
    w = bm.wins(summary, ("vanilla", "inverted"))
    higher = sum(metrics.HIGHER_IS_BETTER.values())
    assert w["inverted"]["best_mean"] == higher  # larger means win where higher is better
    assert w["vanilla"]["best_mean"] == len(metrics.METRICS) - higher


def test_versus_vanilla_pairs_the_same_scenes():
    def row(sampler, seed, psnr_tail):
        per = [{m: 10.0 for m in metrics.METRICS} for _ in range(30)]
        for s in per[-10:]:
            s["psnr"], s["position_error"] = psnr_tail, 20.0 - psnr_tail
        return {"sampler": sampler, "window": 5, "seed": seed, "per_second": per}

    # vanilla loses 2, 3, 4 dB on seeds 0..2; inverted loses 1 dB on each (and on seed 9,
    # which vanilla did not run: not paired)
    rows = [row("vanilla", i, 8.0 - i) for i in range(3)]
    rows += [row("inverted", i, 9.0) for i in (0, 1, 2, 9)]
    v = bm.versus_vanilla(rows, ("vanilla", "inverted"))
    psnr = v["inverted"]["psnr"]
    assert psnr["pairs"] == 3 and psnr["better"] == 3
    assert psnr["gain"] == pytest.approx(2.0)  # (1 + 2 + 3) / 3
    assert psnr["std"] == pytest.approx(1.0) and psnr["sem"] == pytest.approx(1 / 3**0.5)
    # lower is better: position error rising less is a positive gain too
    assert v["inverted"]["position_error"]["gain"] == pytest.approx(2.0)
    assert v["inverted"]["ssim"]["gain"] == 0.0 and v["inverted"]["ssim"]["better"] == 0
    assert "vanilla" not in v and bm.versus_vanilla(rows[3:], ("inverted",)) == {}
