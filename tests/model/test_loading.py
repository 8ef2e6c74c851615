"""Loading real-format weights: round trip, hub cache, new projections, refusals."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from fpk.cli import main
from fpk.config import get_schedule, load_preset
from fpk.errors import UsageError, WeightsError
from fpk.model.loading import load_components, nearest_projection
from fpk.model.packing import pack_history
from fpk.model.tiny import save_components
from fpk.model.transformer import (
    ContextGroup,
    FramePackTransformer,
    groups_from_plan,
    transformer_config,
)


def _inputs(preset, batch=1, seed=3):
    g = torch.Generator().manual_seed(seed)
    a = preset.architecture
    grid = preset.latent_grid()
    c = a.in_channels
    return dict(
        hidden_states=torch.randn(batch, c, 2, grid.height, grid.width, generator=g),
        timestep=torch.full((batch,), 500.0),
        encoder_hidden_states=torch.randn(batch, 6, a.text_embed_dim, generator=g),
        encoder_attention_mask=torch.ones(batch, 6, dtype=torch.bool),
        pooled_projections=torch.randn(batch, a.pooled_projection_dim, generator=g),
        image_embeds=torch.randn(batch, 4, a.image_proj_dim, generator=g),
        target_positions=torch.arange(2).expand(batch, -1),
        context=[
            [
                ContextGroup(
                    torch.randn(c, 1, grid.height, grid.width, generator=g),
                    torch.tensor([5]),
                    (1, 2, 2),
                )
            ]
        ]
        * batch,
        guidance=torch.full((batch,), 10000.0),
    )


def test_round_trip_sharded_bit_identical(tiny_saved):
    preset, components, folder = tiny_saved
    index = json.loads(
        (folder / "transformer/diffusion_pytorch_model.safetensors.index.json").read_text()
    )
    assert len(set(index["weight_map"].values())) > 1  # really sharded
    loaded = load_components(preset, folder)
    x = _inputs(preset)
    with torch.no_grad():
        want = components["transformer"].eval()(**x)
        got = loaded.transformer(**x)
    ref_state = components["transformer"].state_dict()
    assert all(torch.equal(ref_state[k], v) for k, v in loaded.transformer.state_dict().items())
    # same weights; the kernels may sum in another order for differently laid-out tensors
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert loaded.new_keys == [] and loaded.schedule.name == "geometric"
    for name in ("vae", "text_encoder", "text_encoder_2", "image_encoder"):
        a, b = components[name].state_dict(), getattr(loaded, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    ids = loaded.tokenizer("the red circle")["input_ids"]
    assert loaded.tokenizer.convert_ids_to_tokens(ids)[-3:] == [
        "\u2581the",
        "\u2581red",
        "\u2581circle",
    ]


def test_from_hub_cache_by_repo_id(tiny_saved, tmp_path, monkeypatch):
    """A repo id resolves through the Hugging Face cache layout, offline."""
    import huggingface_hub.constants as hf

    preset, _, folder = tiny_saved
    repo, rev = "fpk-test/tiny-framepack", "0" * 40
    snap = tmp_path / "hub" / "models--fpk-test--tiny-framepack"
    shutil.copytree(folder / "transformer", snap / "snapshots" / rev)
    (snap / "refs").mkdir()
    (snap / "refs" / "main").write_text(rev)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hub"))
    from dataclasses import replace

    hub_preset = replace(preset, weights=replace(preset.weights, transformer=repo))
    loaded = load_components(hub_preset, parts=["transformer"], offline=True)
    assert loaded.sources["transformer"].endswith(rev)
    missing = replace(preset, weights=replace(preset.weights, transformer="fpk-test/absent"))
    with pytest.raises(WeightsError, match="hf download fpk-test/absent"):
        load_components(missing, parts=["transformer"], offline=True)


def test_other_schedule_gets_inflated_projections(tiny_saved, tmp_path):
    preset, components, _ = tiny_saved
    released = get_schedule("released")
    model = FramePackTransformer(**transformer_config(preset.architecture, released))
    folder = tmp_path / "w"
    save_components({"transformer": model}, folder)
    (folder / "transformer/config.json").write_text(
        json.dumps(
            {
                **json.loads((folder / "transformer/config.json").read_text()),
                "fpk_schedule": "released",
            }
        )
    )
    with pytest.raises(UsageError, match="--allow-untrained-layout"):
        load_components(preset, folder, parts=["transformer"], schedule="geometric")
    with pytest.warns(UserWarning):
        loaded = load_components(
            preset, folder, parts=["transformer"], schedule="geometric", allow_untrained_layout=True
        )
    assert loaded.new_keys == [
        f"clean_x_embedder.proj_{k}.{p}"
        for k in ("1x4x2", "1x4x4", "1x8x4", "1x8x8")
        for p in ("weight", "bias")
    ]
    emb = loaded.transformer.clean_x_embedder
    assert not emb.proj_1x8x8.weight.is_meta
    # (1,8,8) starts from (1,2,2), the largest released kernel dividing it: a constant frame
    # gives the same token under both
    const = torch.randn(1, 16, 1, 1, 1)
    torch.testing.assert_close(
        emb.proj(const.expand(1, 16, 1, 2, 2)),
        emb.proj_1x8x8(const.expand(1, 16, 1, 8, 8)),
        rtol=1e-4,
        atol=1e-5,
    )


def test_nearest_projection():
    released = [(1, 2, 2), (2, 4, 4), (4, 8, 8)]
    assert nearest_projection((1, 4, 2), released) == (1, 2, 2)
    assert nearest_projection((2, 8, 8), released) == (2, 4, 4)
    assert nearest_projection((8, 16, 16), released) == (4, 8, 8)
    assert nearest_projection((3, 6, 6), released) == (1, 2, 2)  # divides: exact repeat
    assert nearest_projection((1, 6, 6), released[1:]) == (2, 4, 4)  # none divides: log-volume


def test_geometric_batch_of_mixed_histories(tiny_saved, capsys):
    """Seed schedule, forward + backward, samples with different history lengths; each
    sample's token count equals `fpk inspect-context` for the same settings."""
    preset, components, _ = tiny_saved
    model = components["transformer"].train()
    grid, window = preset.latent_grid(), 3
    histories = [0, 2, 9]
    c = preset.architecture.in_channels
    video = torch.randn(c, 40, grid.height, grid.width)
    anchor = ContextGroup(video[:, :1], torch.tensor([0]), (1, 2, 2))
    context = []
    for t in histories:  # forward sampling: history precedes the section at positions 10..12
        plan = pack_history(preset.schedule, t, grid, origin=9, step=-1)
        context.append([anchor, *groups_from_plan(plan, lambda r: video[:, r.start : r.stop])])
    x = _inputs(preset, batch=3)
    x["hidden_states"] = torch.randn(3, c, window, grid.height, grid.width, requires_grad=True)
    x["target_positions"] = torch.arange(10, 10 + window).expand(3, -1)
    x["context"] = context
    out = model(**x)
    out.square().mean().backward()
    assert x["hidden_states"].grad.abs().sum() > 0
    assert model.clean_x_embedder.proj_1x8x8.weight.grad is not None  # tail/level 5 used
    targets = model.x_embedder(x["hidden_states"])
    _, _, valid = model.embed_sequence(
        targets, x["target_positions"], context, grid.height, grid.width
    )
    for t, n in zip(histories, valid.sum(1).tolist(), strict=True):
        with pytest.raises(SystemExit):
            main(
                [
                    "inspect-context",
                    "--preset",
                    "tiny",
                    "--json",
                    "--window",
                    str(window),
                    "--history-frames",
                    str(t),
                ]
            )
        assert json.loads(capsys.readouterr().out)["total_tokens"] == n


def _corrupt(folder, how):
    t = folder / "transformer"
    if how == "pickle":
        for f in t.glob("*.safetensors*"):
            f.unlink()
        torch.save({"x": torch.zeros(1)}, t / "diffusion_pytorch_model.bin")
    elif how == "truncated":
        shard = sorted(t.glob("*.safetensors"))[0]
        shard.write_bytes(shard.read_bytes()[:100])
    elif how == "architecture":
        other = load_preset("tiny").architecture
        from dataclasses import replace

        model = FramePackTransformer(
            **transformer_config(replace(other, num_layers=1), load_preset("tiny").schedule)
        )
        shutil.rmtree(t)
        model.save_pretrained(t)
    elif how == "missing":
        shutil.rmtree(folder)


@pytest.mark.parametrize(
    "how, needle",
    [
        ("pickle", "refusing pickle checkpoint"),
        ("truncated", "truncated or not a safetensors"),
        ("architecture", "another architecture"),
        ("missing", "not found"),
    ],
)
def test_bad_checkpoints_one_line_exit_2(tiny_saved, tmp_path, capsys, how, needle):
    _, _, folder = tiny_saved
    copy = tmp_path / "w"
    shutil.copytree(folder, copy)
    _corrupt(copy, how)
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "check-weights",
                "--preset",
                "tiny",
                "--weights",
                str(copy),
                "--component",
                "transformer",
            ]
        )
    err = capsys.readouterr().err
    assert exit_.value.code == 2  # bad input, like any other
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and needle in err, err


def test_key_mismatch_names_keys(tiny_saved, tmp_path):
    preset, components, _ = tiny_saved
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in components["transformer"].state_dict().items()}
    state["proj_out.weight"] = torch.zeros(3, 3)
    folder = tmp_path / "transformer"
    folder.mkdir()
    save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(WeightsError, match=r"shapes differ: proj_out.weight \(3, 3\)"):
        load_components(preset, tmp_path, parts=["transformer"])


def test_inspect_context_base_counts_without_allocating():
    """Peak RSS of `fpk inspect-context --preset base` (13B on the meta device) under 1 GiB."""
    # VmHWM of the child's own image: ru_maxrss would also count the parent's pages that the
    # fork shared before exec (a large test process makes any child look large)
    code = (
        "import sys\nfrom fpk.cli import main\n"
        "try:\n    main(['inspect-context', '--preset', 'base', '--json'])\n"
        "except SystemExit:\n    pass\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "print(int(hwm.split()[1]), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["parameters"] == 12_874_314_816
    peak_kib = int(done.stderr.strip().splitlines()[-1])
    assert peak_kib < 1024 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"
