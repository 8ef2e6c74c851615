"""`fpk generate --lora` end to end: the LoRA changes the video, weight 0 gives the base video
exactly, jobs of one batch switch LoRAs without reloading, and the sidecar records each."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from fpk.media.video import read_video

from ..test_cli import run

FAST = ["--steps", "2", "--window", "2", "--len", "10f", "--crf", "0"]


def _kohya_lora(model, path, seed=0):
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name in ("transformer_blocks.0.attn.to_q", "transformer_blocks.0.ff.net.2", "proj_out"):
        linear = model.get_submodule(name)
        flat = "lora_unet_" + name.replace(".", "_")
        state[f"{flat}.lora_down.weight"] = torch.randn(4, linear.in_features, generator=g)
        state[f"{flat}.lora_up.weight"] = torch.randn(linear.out_features, 4, generator=g)
        state[f"{flat}.alpha"] = torch.tensor(4.0)
    save_file(state, str(path))
    return path


def test_lora_jobs_in_one_batch(capsys, tiny_saved, tmp_path):
    _, components, weights = tiny_saved
    _kohya_lora(components["transformer"], tmp_path / "circle.safetensors")
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(image)
    manifest = tmp_path / "jobs.toml"
    manifest.write_text(
        '[[job]]\nname = "zero"\nimage = "a.png"\nlora = ["circle.safetensors:0"]\n'
        '[[job]]\nname = "base"\nimage = "a.png"\n'
        '[[job]]\nname = "with"\nimage = "a.png"\nlora = ["circle.safetensors:1.5"]\n'
    )
    code, _, err = run(capsys, "generate", "--weights", str(weights), "--out", str(tmp_path / "o"),
                       "--manifest", str(manifest), "--quiet", *FAST)  # fmt: skip
    assert code == 0, err
    frames = {n: read_video(tmp_path / "o" / f"{n}.mp4")[0] for n in ("zero", "base", "with")}
    assert np.array_equal(frames["zero"], frames["base"])  # weight 0: the base video
    assert np.abs(frames["with"].astype(int) - frames["base"]).mean() > 1  # it changes it
    side = json.loads((tmp_path / "o" / "with.json").read_text())
    (ref,) = side["job"]["lora"]
    assert (
        ref["weight"] == 1.5
        and len(ref["sha256"]) == 64
        and ref["path"].endswith("circle.safetensors")
    )
    base_side = json.loads((tmp_path / "o" / "base.json").read_text())
    assert base_side["job"]["lora"] == [] and base_side["settings_hash"] != side["settings_hash"]


def test_a_lora_for_another_model_is_one_line_and_exit_2(capsys, tiny_saved, tmp_path):
    _, _, weights = tiny_saved
    path = tmp_path / "sdxl.safetensors"
    key = "lora_unet_down_blocks_0_attn_to_q"
    save_file({f"{key}.lora_down.weight": torch.zeros(4, 8),
               f"{key}.lora_up.weight": torch.zeros(8, 4)}, str(path))  # fmt: skip
    code, _, err = run(capsys, "generate", "--weights", str(weights), "--out", str(tmp_path / "o"),
                       "--lora", str(path), *FAST)  # fmt: skip
    assert code == 2 and "Traceback" not in err
    assert "match nothing in the transformer" in err and len(err.strip().splitlines()) == 1
    assert not list((tmp_path / "o").glob("*.mp4"))
