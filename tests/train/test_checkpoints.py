"""Checkpoints and logs: what a run keeps for the repository stays small and resumable."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors import safe_open

from fpk.train.checkpoints import FINISHED, load_checkpoint, save_checkpoint, strip_checkpoint
from fpk.train.config import TrainConfig
from fpk.train.logs import flush_log, read_log
from fpk.train.optim import Ema, lr_at

ROOT = Path(__file__).resolve().parents[2]


def _trained():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return model, Ema(model, 0.9), opt


def test_stripped_checkpoint_keeps_the_weights_and_resumes_with_fresh_moments(tmp_path):
    model, ema, opt = _trained()
    full, finished = tmp_path / "full.safetensors", tmp_path / FINISHED
    save_checkpoint(full, model.state_dict(), ema, opt, 7, [])
    strip_checkpoint(full, finished)
    with safe_open(str(full), "pt") as a, safe_open(str(finished), "pt") as b:
        kept = [k for k in a.keys() if not k.startswith("optim.")]
        assert sorted(b.keys()) == sorted(kept) and len(kept) < len(list(a.keys()))
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in kept)
        assert a.metadata() == b.metadata()
    other = torch.nn.Linear(3, 2)
    fresh = torch.optim.AdamW(other.parameters(), lr=1e-2)
    assert load_checkpoint(finished, other, Ema(other, 0.9), fresh) == 7
    assert torch.equal(other.weight, model.weight) and not fresh.state_dict()["state"]


def test_gzip_log_appends_across_runs_and_is_deterministic(tmp_path):
    a, b = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    for path in (a, b):
        flush_log(path, [{"step": 1, "loss": 0.5}])
        flush_log(path, [{"step": 2, "loss": 0.25}])
    assert read_log(a) == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25}]
    assert a.read_bytes() == b.read_bytes()
    assert gzip.decompress(a.read_bytes()).count(b"\n") == 2


@given(warmup=st.integers(1, 50), steps=st.integers(51, 500), step=st.integers(0, 600))
def test_lr_warms_up_then_decays_to_a_tenth(warmup, steps, step):
    cfg = TrainConfig(steps=steps, warmup=warmup, lr=1.0)
    lr = lr_at(step, cfg)
    if step < warmup:
        assert lr == (step + 1) / warmup
    else:
        assert 0.1 - 1e-9 <= lr <= 1.0 + 1e-9 and lr <= lr_at(max(warmup, step - 1), cfg)
    if step >= steps:
        assert abs(lr - 0.1) < 1e-9


def test_ema_warm_up_follows_early_weights():
    model = torch.nn.Linear(1, 1, bias=False)
    ema = Ema(model, 0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update()  # decay min(0.999, 2/11): mostly the new weights
    assert ema.shadow["weight"].item() > 0.8 * model.weight.item()


def test_ema_averages_only_what_trains_and_applies_its_averages_for_a_block():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    model[0].requires_grad_(False)
    ema = Ema(model, 0.5)
    assert sorted(ema.shadow) == ["1.bias", "1.weight"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[1].weight.add_(1.0)
    trained = model[1].weight.clone()
    for _ in range(3):
        ema.update()
    with ema.applied():
        averaged = model[1].weight.clone()
        assert torch.equal(model[0].weight, before["0.weight"])
    assert torch.equal(model[1].weight, trained)  # put back after the block
    assert (averaged > before["1.weight"]).all() and (averaged < trained).all()


def test_the_repository_keeps_one_stripped_checkpoint_and_compressed_logs():
    tracked = subprocess.run(
        ["git", "ls-files", "training"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked, "training/ holds the shipped models' final checkpoints"
    checkpoints = [Path(p) for p in tracked if p.endswith(".safetensors")]
    folders = [p.parent for p in checkpoints]
    assert len(folders) == len(set(folders)), checkpoints
    for path in checkpoints:
        assert path.name == FINISHED
        with safe_open(str(ROOT / path), "pt") as f:
            assert not any(k.startswith("optim.") for k in f.keys()), path
    assert not [p for p in tracked if p.endswith(".jsonl") or "/sample-" in p]
