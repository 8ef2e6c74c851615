"""`fpk benchmark --part speed`: the FLOP count by hand, and the report on the tiny preset."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from fpk.bench.speed import block_flops, random_transformer
from fpk.cli import app
from fpk.config import load_preset
from fpk.errors import UsageError


def test_block_flops_match_the_closed_form():
    preset = load_preset("tiny")
    model = random_transformer(preset, "cpu", torch.float32)
    a = preset.architecture
    d = a.num_attention_heads * a.attention_head_dim
    ni, nt = 700, 90
    n = ni + nt
    # every block (mlp ratio 4): 12 d^2 weights per token stream, x2 for multiply-add, and
    # 2 x 2 n^2 d of attention
    per_block = 2 * 12 * d * d * n + 4 * n * n * d
    assert block_flops(model, ni, nt) == (a.num_layers + a.num_single_layers) * per_block


@pytest.mark.slow
def test_speed_report_with_random_weights_on_the_cpu(tmp_path):
    result = CliRunner().invoke(app, ["benchmark", "--part", "speed", "--random-weights",
                                      "--quick", "--out", str(tmp_path), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    speed = json.loads((tmp_path / "report.json").read_text())["speed"]
    configs = [r["config"] for r in speed["rows"]]
    assert configs[0] == "attention sdpa" and "cache teacache" in configs
    assert {"offload model", "offload group", "offload sequential", "compile"} <= set(configs)
    compiled = next(r for r in speed["rows"] if r["config"] == "compile")
    assert compiled["compile_s"] > 0  # the first call compiles; reported apart
    for r in speed["rows"]:
        assert r["s_per_step"] > 0 and r["tflops"] > 0 and r["peak_vram_gb"] is None
    teacache = next(r for r in speed["rows"] if r["config"] == "cache teacache")
    assert (
        teacache["forwards"]
        < next(r for r in speed["rows"] if r["config"] == "cache none")["forwards"]
    )
    bad = CliRunner().invoke(app, ["benchmark", "--random-weights", "--out", str(tmp_path)])
    assert isinstance(bad.exception, UsageError) and "add --part speed" in str(bad.exception)
