"""LoRAs in the three key formats people share, applied to fpk's transformer: each changes the
weights by weight x B A, weight 0 gives the base output exactly, fused equals unfused, and
switching sets between jobs gives the base weights back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fpk.errors import UsageError
from fpk.model.lora import LoraState, detect_format, lora_modules, parse_lora, to_peft

from .test_transformer import _as_groups, _ours, _reference, _released_inputs

MODULES = ("transformer_blocks.0.attn.to_q", "single_transformer_blocks.0.proj_mlp", "proj_out")
RANK = 2


def _factors(model, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in MODULES:
        linear = model.get_submodule(name)
        a = torch.randn(RANK, linear.in_features, generator=g) * 0.3
        b = torch.randn(linear.out_features, RANK, generator=g) * 0.3
        out[name] = (a, b)
    return out


def _write(folder: Path, fmt: str, factors) -> Path:
    state = {}
    for m, (a, b) in factors.items():
        if fmt == "peft":
            state[f"transformer.{m}.lora_A.weight"] = a
            state[f"transformer.{m}.lora_B.weight"] = b
        elif fmt == "kohya":  # alpha = rank / 2 halves the up matrix's effect
            flat = "lora_unet_" + m.replace(".", "_")
            state[f"{flat}.lora_down.weight"] = a
            state[f"{flat}.lora_up.weight"] = b * 2
            state[f"{flat}.alpha"] = torch.tensor(RANK / 2)
        else:  # diffusion-pipe / ComfyUI
            state[f"diffusion_model.{m}.lora_down.weight"] = a
            state[f"diffusion_model.{m}.lora_up.weight"] = b
    path = folder / f"{fmt}.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


@pytest.fixture()
def model(tiny_arch):
    return _ours(_reference(tiny_arch), tiny_arch)


def _forward(model) -> torch.Tensor:
    x = _released_inputs(1, True)
    tgt = x["indices"][0]
    keys = ("hidden_states", "timestep", "encoder_hidden_states", "encoder_attention_mask",
            "pooled_projections", "image_embeds", "guidance")  # fmt: skip
    with torch.no_grad():
        return model(**{k: x[k] for k in keys}, target_positions=tgt[None],
                     context=[_as_groups(x, 0)])  # fmt: skip


@pytest.mark.parametrize("fmt", ["peft", "kohya", "diffusion_model"])
def test_each_format_changes_the_weights_by_weight_times_b_a(model, tmp_path, fmt):
    factors = _factors(model, 0)
    path = _write(tmp_path, fmt, factors)
    base = {m: model.get_submodule(m).weight.detach().clone() for m in MODULES}
    state = LoraState()
    state.use(model, (parse_lora(f"{path}:0.5"),))
    for m, (a, b) in factors.items():
        fused = model.get_submodule(m).base_layer.weight
        assert torch.allclose(fused, base[m] + 0.5 * b @ a, atol=1e-6), m
    state.use(model, ())
    for m in MODULES:
        assert torch.allclose(model.get_submodule(m).base_layer.weight, base[m], atol=1e-6)


def test_the_formats_agree_weight_0_is_the_base_and_fused_equals_unfused(model, tmp_path):
    factors = _factors(model, 1)
    paths = {fmt: _write(tmp_path, fmt, factors) for fmt in ("peft", "kohya", "diffusion_model")}
    base = _forward(model)
    state = LoraState()
    state.use(model, (parse_lora(f"{paths['peft']}:0"),))
    assert torch.equal(_forward(model), base)  # weight 0: the base output, exactly
    outputs = {}
    for fmt, path in paths.items():
        state.use(model, (parse_lora(f"{path}:0.8"),))
        outputs[fmt] = _forward(model)
    assert not torch.allclose(outputs["peft"], base, atol=1e-3)  # it does something
    for fmt in ("kohya", "diffusion_model"):
        assert torch.allclose(outputs[fmt], outputs["peft"], atol=1e-6), fmt
    state.use(model, (parse_lora(f"{paths['peft']}:0.8"),), fuse=False)
    assert (_forward(model) - outputs["peft"]).abs().max() < 1e-5  # unfused = fused
    state.use(model, ())
    assert torch.allclose(_forward(model), base, atol=1e-5)  # back to the base


def test_two_loras_add_up(model, tmp_path):
    for sub in ("1", "2"):
        (tmp_path / sub).mkdir()
    one = _write(tmp_path / "1", "peft", _factors(model, 2))
    two = _write(tmp_path / "2", "kohya", _factors(model, 3))
    base = {m: model.get_submodule(m).weight.detach().clone() for m in MODULES}
    LoraState().use(model, (parse_lora(f"{one}:1"), parse_lora(f"{two}:-0.5")))
    for m in MODULES:
        (a1, b1), (a2, b2) = _factors(model, 2)[m], _factors(model, 3)[m]
        want = base[m] + b1 @ a1 - 0.5 * b2 @ a2
        assert torch.allclose(model.get_submodule(m).base_layer.weight, want, atol=1e-5)


def test_keys_that_match_nothing_are_refused_with_a_count_and_examples(model):
    state = {
        "transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(2, 8),
        "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": torch.zeros(8, 2),
        "transformer.down_blocks.3.conv.lora_A.weight": torch.zeros(2, 8),
        "transformer.down_blocks.3.conv.lora_B.weight": torch.zeros(8, 2),
    }
    with pytest.raises(UsageError, match=r"1 of 2 LoRA modules match nothing.*down_blocks\.3"):
        to_peft(state, lora_modules(model), Path("x.safetensors"))


def test_formats_are_told_apart_by_their_keys():
    assert detect_format(["lora_unet_proj_out.lora_down.weight"]) == "kohya"
    assert detect_format(["diffusion_model.double_blocks.0.img_attn_qkv.lora_A.weight"]) == (
        "original"
    )
    assert detect_format(["transformer.proj_out.lora_A.weight"]) == "peft"


@pytest.mark.parametrize(
    "text, needle",
    [
        ("missing.safetensors", "no such file"),
        ("{pt}", "only .safetensors"),
        ("{st}:99", "outside -10..10"),
    ],  # fmt: skip
)
def test_bad_lora_arguments_say_what_to_do(tmp_path, text, needle):
    (tmp_path / "a.pt").write_bytes(b"pickle")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "a.safetensors"))
    text = text.format(pt=tmp_path / "a.pt", st=tmp_path / "a.safetensors")
    with pytest.raises(UsageError, match=needle):
        parse_lora(text, tmp_path)


def test_weight_parsing_keeps_colons_in_paths(tmp_path):
    folder = tmp_path / "c:d"
    folder.mkdir()
    save_file({"x": torch.zeros(1)}, str(folder / "s.safetensors"))
    assert parse_lora(f"{folder}/s.safetensors").weight == 1.0
    ref = parse_lora(f"{folder}/s.safetensors:0.25")
    assert ref.weight == 0.25 and ref.path == folder / "s.safetensors" and len(ref.sha256) == 64


def test_the_shipped_circle_lora_fits_the_tiny_preset():
    """examples/loras/circle-tiny.safetensors (the LoRA of benchmarks/lora_circle.py, trained
    on the CPU): diffusers/PEFT keys, every one a layer of the tiny preset's transformer."""
    from fpk.config import load_preset
    from fpk.model.lora import check_lora, read_lora

    path = Path(__file__).resolve().parents[2] / "examples" / "loras" / "circle-tiny.safetensors"
    state = read_lora(path)
    assert detect_format(list(state)) == "peft"
    assert {v.shape[0] for k, v in state.items() if "lora_A" in k} == {64}  # rank 64
    check_lora(parse_lora(str(path)), load_preset("tiny"))
