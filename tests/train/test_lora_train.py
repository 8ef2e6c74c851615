"""`fpk train --lora --data FOLDER`: the data folder, adapters only, buckets, resume, and an
export that `--lora` loads back to the very model that was trained."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from fpk.errors import UsageError
from fpk.synthetic import world
from fpk.train.checkpoints import RESUME
from fpk.train.config import LORA_FILE
from fpk.train.data import find_clips, write_world_clips
from fpk.train.logs import LOG, read_log
from fpk.train.training import TrainConfig, train


@pytest.fixture(scope="module")
def base(small_preset, tmp_path_factory):
    """Random components of the small preset (what a LoRA trains on top of)."""
    from fpk.model.tiny import ensure_components

    folder = tmp_path_factory.mktemp("base")
    ensure_components(small_preset, folder, world.vocabulary(), 0)
    with torch.no_grad():  # zero-initialised output layers would make every LoRA a no-op
        from fpk.model.loading import load_components

        comps = load_components(small_preset, folder)
        for p in comps.transformer.parameters():
            p.add_(0.05 * torch.randn_like(p))
        comps.transformer.save_pretrained(folder / "transformer", safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    write_world_clips(folder, [world.circling_scene(i) for i in range(2)], 1.0)
    return folder


def _config(data, **kw) -> TrainConfig:
    base = dict(component="lora", data=data, steps=4, batch=2, lr=1e-2, warmup=1, rank=4,
                checkpoint_every=2, first_share=0.5)  # fmt: skip
    return TrainConfig(**(base | kw))


def _weights(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "transformer" / "diffusion_pytorch_model.safetensors"))


def test_lora_trains_adapters_only_resumes_and_exports_what_lora_loads(
    small_preset, base, data, tmp_path
):
    from fpk.model.loading import load_components
    from fpk.model.lora import LoraState, parse_lora
    from fpk.train.lora import LoraTask

    before = _weights(base)
    run = tmp_path / "run"
    ckpt = train(small_preset, base, run, _config(data))
    folder = run / "lora"
    assert [r["step"] for r in read_log(folder / LOG)] == [1, 2, 3, 4]
    after = _weights(base)
    assert all(torch.equal(before[k], after[k]) for k in before)  # the base is not touched
    with safe_open(str(ckpt), "pt") as f:  # adapters only: no base weight in a checkpoint
        keys = list(f.keys())
        assert keys and all(".lora_" in k for k in keys), keys[:3]
    train(small_preset, base, run, _config(data, steps=6), resume=True)
    assert [r["step"] for r in read_log(folder / LOG)][-1] == 6
    with safe_open(str(folder / RESUME), "pt") as f:
        assert f.metadata()["step"] == "6" and any(k.startswith("optim.") for k in f.keys())

    lora = folder / LORA_FILE
    with safe_open(str(lora), "pt") as f:
        assert all(k.startswith("transformer.") and ".lora_" in k for k in f.keys())
    # the exported file, loaded by --lora onto the base weights, is the trained model's EMA
    trained = load_components(small_preset, base)
    task = LoraTask(small_preset, trained, _config(data, steps=6))
    from fpk.train.checkpoints import load_checkpoint
    from fpk.train.optim import Ema

    ema = Ema(task.model, 0.999)
    load_checkpoint(ckpt, task.model, ema, torch.optim.AdamW(ema.params.values()), partial=True)
    loaded = load_components(small_preset, base).transformer
    LoraState().use(loaded, (parse_lora(str(lora)),), fuse=False)
    plain = load_components(small_preset, base).transformer
    items = task.batch_items()
    x = torch.randn(len(items), *items[0][3].shape)
    sigma = torch.tensor([0.7] * len(items))
    prompts = [v["prompt"] for v, *_ in items]
    with torch.no_grad(), ema.applied():
        want = task.flow(task.model.eval(), items, x, sigma, prompts)
        got = task.flow(loaded.eval(), items, x, sigma, prompts)
        without = task.flow(plain.eval(), items, x, sigma, prompts)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    assert (without - want).abs().max() > 1e-3  # and the LoRA does change the output


def test_a_batch_comes_from_one_aspect_bucket(small_preset, base, tmp_path):
    from fpk.media.video import VideoWriter

    folder = tmp_path / "mixed"
    write_world_clips(folder, [world.circling_scene(i) for i in range(2)], 0.5)
    wide = VideoWriter(folder / "wide.mp4", 30, 128, 64, crf=0)
    wide.write(np.zeros((16, 64, 128, 3), np.uint8))
    wide.close()
    (folder / "wide.txt").write_text("the red square on a black background stays in place")
    from fpk.model.loading import load_components
    from fpk.train.lora import LoraTask

    task = LoraTask(small_preset, load_components(small_preset, base), _config(folder, batch=4))
    grids = {(v["grid"].height, v["grid"].width) for v in task.videos}
    assert len(grids) == 2  # the wide clip has its own bucket, at its own aspect
    for _ in range(10):
        items = task.batch_items()
        assert len({tuple(t.shape) for *_, t in items}) == 1
        assert len({(v["grid"].height, v["grid"].width) for v, *_ in items}) == 1


def test_data_folder_layouts_and_their_errors(tmp_path):
    write_world_clips(tmp_path / "pairs", [world.circling_scene(0)], 0.2)
    assert [c.caption for c in find_clips(tmp_path / "pairs")] == [world.circling_scene(0).prompt]
    jl = tmp_path / "jsonl"
    write_world_clips(jl, [world.circling_scene(0), world.circling_scene(1)], 0.2)
    (jl / "00.txt").unlink()
    (jl / "captions.jsonl").write_text(json.dumps({"video": "00.mp4", "caption": "a  b\n"}) + "\n")
    assert [c.caption for c in find_clips(jl)][0] == "a b"  # one from the jsonl, one beside
    cases = {
        tmp_path / "nothing": "not a folder",
        tmp_path / "empty": "no captioned clips",
    }
    (tmp_path / "empty").mkdir()
    for folder, words in cases.items():
        with pytest.raises(UsageError, match=words):
            find_clips(folder)
    (jl / "01.txt").unlink()
    with pytest.raises(UsageError, match="01.mp4 has no caption"):
        find_clips(jl)
    (jl / "01.txt").write_text("x")
    (jl / "captions.jsonl").write_text('{"video": "../escape.mp4", "caption": "x"}\n')
    with pytest.raises(UsageError, match="line 1: no clip"):
        find_clips(jl)
    (jl / "captions.jsonl").write_text('{"video": "00.mp4", "caption": "x"}\n' * 2)
    with pytest.raises(UsageError, match="captioned twice"):
        find_clips(jl)
    (jl / "captions.jsonl").write_text("{not json\n")
    with pytest.raises(UsageError, match="line 1 is not JSON"):
        find_clips(jl)


def test_lora_settings_are_checked(tmp_path):
    with pytest.raises(UsageError, match="--data"):
        TrainConfig(component="lora")
    with pytest.raises(UsageError, match="--data"):
        TrainConfig(data=tmp_path)
    with pytest.raises(UsageError, match="--rank"):
        TrainConfig(component="lora", data=tmp_path, rank=0)


def test_a_clip_shorter_than_a_section_is_refused(small_preset, base, tmp_path):
    from fpk.model.loading import load_components
    from fpk.train.lora import LoraTask

    write_world_clips(tmp_path / "short", [world.circling_scene(0)], 0.1)
    with pytest.raises(UsageError, match="a section needs"):
        LoraTask(small_preset, load_components(small_preset, base), _config(tmp_path / "short"))


def test_reg_data_is_drawn_at_its_share_from_the_batch_bucket(small_preset, base, data, tmp_path):
    from fpk.model.loading import load_components
    from fpk.train.lora import LoraTask

    reg = tmp_path / "reg"
    write_world_clips(reg, [world.scene(i) for i in range(3)], 1.0)

    def task_of(**kw):  # fresh components: each task adds its adapter
        return LoraTask(small_preset, load_components(small_preset, base), _config(data, **kw))

    task = task_of(batch=64, reg_data=reg, reg_share=0.25)
    assert len(task.videos) == 2 and len(task.reg_videos) == 3  # kept apart: leads are clips
    assert task.sample_start()[1] == world.circling_scene(0).prompt
    reg_prompts = {world.scene(i).prompt for i in range(3)}
    drawn = [v["prompt"] in reg_prompts for _ in range(4) for v, *_ in task.batch_items()]
    assert 0.15 < np.mean(drawn) < 0.35  # 256 draws at p = 0.25: 5 sigma either side
    none = task_of(batch=64, reg_data=reg, reg_share=0.0)
    assert not any(v["prompt"] in reg_prompts for v, *_ in none.batch_items())
    with pytest.raises(UsageError, match="--reg-data .*not a folder"):
        task_of(reg_data=tmp_path / "missing")
    with pytest.raises(UsageError, match="--reg-share"):
        _config(data, reg_data=reg, reg_share=1.5)
    with pytest.raises(UsageError, match="--reg-data applies to --lora"):
        TrainConfig(reg_data=reg)


def test_a_lora_trains_on_bf16_weights_with_fp32_adapters(small_preset, base, data, tmp_path):
    """`--dtype bf16` (what a GPU run of the 13B model uses): the frozen weights load in bf16,
    the adapters, their average and their moments stay fp32, the base file is untouched, and
    the exported file loads with `--lora` onto bf16 weights and changes what they predict."""
    from fpk.model.loading import load_components
    from fpk.model.lora import LoraState, parse_lora
    from fpk.train.lora import LoraTask

    before = _weights(base)
    cfg = _config(data, dtype="bf16", checkpointing=True)
    task = LoraTask(small_preset, load_components(small_preset, base, dtype=torch.bfloat16), cfg)
    params = dict(task.model.named_parameters())
    assert {p.dtype for n, p in params.items() if p.requires_grad} == {torch.float32}
    assert {p.dtype for n, p in params.items() if not p.requires_grad} == {torch.bfloat16}
    assert task.rt.dtype == torch.bfloat16 and task.model.gradient_checkpointing
    run = tmp_path / "run"
    train(small_preset, base, run, cfg)
    losses = [r["loss"] for r in read_log(run / "lora" / LOG)]
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert all(torch.equal(before[k], v) for k, v in _weights(base).items())
    with safe_open(str(run / "lora" / RESUME), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys() if k.startswith(("ema.", "optim."))
                and not k.endswith(".step")} == {torch.float32}  # fmt: skip
    plain = load_components(small_preset, base, dtype=torch.bfloat16).transformer
    loaded = load_components(small_preset, base, dtype=torch.bfloat16).transformer
    LoraState().use(loaded, (parse_lora(str(run / "lora" / LORA_FILE)),), fuse=False)
    items = task.batch_items()
    x = torch.randn(len(items), *items[0][3].shape)
    sigma = torch.tensor([0.7] * len(items))
    prompts = [v["prompt"] for v, *_ in items]
    with torch.no_grad():
        got = task.flow(loaded.eval(), items, x, sigma, prompts)
        without = task.flow(plain.eval(), items, x, sigma, prompts)
    assert got.dtype == torch.bfloat16 and (got - without).float().abs().max() > 1e-3


def test_gradient_checkpointing_trains_the_same_adapters(small_preset, base, data, tmp_path):
    """Recomputing activations in the backward pass changes memory, not the result."""
    from safetensors.torch import load_file

    got = {}
    for checkpointing in (False, True):
        run = tmp_path / str(checkpointing)
        train(small_preset, base, run, _config(data, steps=2, checkpointing=checkpointing))
        got[checkpointing] = load_file(str(run / "lora" / LORA_FILE))
    assert got[False].keys() == got[True].keys()
    for k, v in got[False].items():
        assert torch.allclose(v, got[True][k], atol=1e-6), k


def test_devices_and_dtypes_are_checked(data):
    with pytest.raises(UsageError, match="--dtype bf16 applies to --lora"):
        TrainConfig(dtype="bf16")
    with pytest.raises(UsageError, match="--dtype 'fp8' is not one of"):
        _config(data, dtype="fp8")
    assert TrainConfig(dtype="fp32").devices()[1] == torch.float32  # full training: fp32
    assert _config(data, device="cpu").devices() == (torch.device("cpu"), torch.float32)
    assert _config(data, device="cpu", dtype="bf16").devices()[1] == torch.bfloat16
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA GPU is available here"):
            _config(data, device="cuda").devices()


def test_lora_layers_attention_adapts_the_attention_projections_only(small_preset, base, data):
    from fpk.model.loading import load_components
    from fpk.train.lora import LoraTask

    def adapted(layers: str) -> set[str]:
        task = LoraTask(small_preset, load_components(small_preset, base),
                        _config(data, lora_layers=layers))  # fmt: skip
        names = {n.split(".lora_")[0] for n, p in task.model.named_parameters() if p.requires_grad}
        return {n.split(".", 2)[-1] for n in names}  # e.g. "attn.to_q" of every block

    everything, attention = adapted("all"), adapted("attention")
    projections = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj",
                   "to_add_out")  # fmt: skip
    assert attention == {f"attn.{n}" for n in projections}
    assert {"ff.net.0.proj", "ff_context.net.2", "proj_mlp", "proj_out"} <= everything - attention
    with pytest.raises(UsageError, match="--lora-layers 'mlp'"):
        _config(data, lora_layers="mlp")
    with pytest.raises(UsageError, match="--lora-layers applies to --lora"):
        TrainConfig(lora_layers="attention")


def test_lora_dropout_drops_the_adapters_input_while_training_only(small_preset, base, data):
    """`--lora-dropout P`: peft's dropout before every adapter; the adapted model is random
    in train mode and deterministic in eval mode (what export and `--lora` see)."""
    from fpk.model.loading import load_components
    from fpk.train.lora import LoraTask

    task = LoraTask(small_preset, load_components(small_preset, base),
                    _config(data, lora_dropout=0.5))  # fmt: skip
    model = task.model
    drops = [m.lora_dropout["default"] for m in model.modules() if hasattr(m, "lora_dropout")]
    assert drops and all(isinstance(d, torch.nn.Dropout) and d.p == 0.5 for d in drops)
    with torch.no_grad():
        for p in model.parameters():  # lora_B starts at zero: give the adapters an effect
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    layer = next(m for m in model.modules() if hasattr(m, "lora_dropout"))
    x = torch.randn(2, layer.in_features)
    layer.train()
    assert not torch.equal(layer(x), layer(x))
    layer.eval()
    assert torch.equal(layer(x), layer(x))
    with pytest.raises(UsageError, match="--lora-dropout 1.0"):
        _config(data, lora_dropout=1.0)
    with pytest.raises(UsageError, match="--lora-dropout applies to --lora"):
        TrainConfig(lora_dropout=0.1)


@pytest.mark.parametrize("seed", range(6))
def test_shifted_copies_are_the_same_clip_elsewhere_in_the_frame(seed):
    """A circling clip on a plain background, shifted by each of still_shifts, is the world's
    render of the same scene started that much further (nothing that moves crosses an edge,
    the background that wraps round is the same); a still clip can go anywhere on the step
    grid; a clip whose every pixel changes can go nowhere."""
    import dataclasses
    import random

    from fpk.train.data import shifted_copies, still_shifts

    scene = dataclasses.replace(world.circling_scene(seed), background="gray")
    pixels = world.render(scene, 41)
    shifts = still_shifts(pixels, world.GRID)
    assert shifts and (0, 0) not in shifts
    for dx, dy in shifts:
        moved = dataclasses.replace(scene, start=(scene.start[0] + dx, scene.start[1] + dy))
        np.testing.assert_array_equal(
            np.roll(pixels, (dy, dx), axis=(1, 2)), world.render(moved, 41)
        )
        xs = [moved.position(f)[0] for f in range(41)]
        ys = [moved.position(f)[1] for f in range(41)]
        assert min(xs) >= 0 and min(ys) >= 0
        assert max(xs) + world.OBJECT <= world.SIZE and max(ys) + world.OBJECT <= world.SIZE
    copies = shifted_copies(pixels, 3, world.GRID, random.Random(seed))
    assert len(copies) == min(3, len(shifts))
    assert len({c.tobytes() for c in copies}) == len(copies)
    assert all(any(np.array_equal(c, np.roll(pixels, (dy, dx), axis=(1, 2))) for dx, dy in shifts)
               for c in copies)  # fmt: skip
    still = np.repeat(pixels[:1], 5, axis=0)
    assert len(still_shifts(still, world.GRID)) == (world.SIZE // world.GRID) ** 2 - 1
    fading = np.stack([np.full_like(pixels[0], 10 * i) for i in range(5)])
    assert still_shifts(fading, world.GRID) == []


def test_lora_task_trains_on_each_clips_shifted_copies(small_preset, base, data):
    from fpk.model.loading import load_components
    from fpk.train.lora import LoraTask

    task = LoraTask(
        small_preset, load_components(small_preset, base), _config(data, shift_copies=2)
    )
    assert len(task.videos) == 2 * 3
    captions = [v["prompt"] for v in task.videos]
    assert captions == [world.circling_scene(0).prompt] * 3 + [world.circling_scene(1).prompt] * 3
    first = task.videos[0]["first_frame"]
    for copy in task.videos[1:3]:
        assert not np.array_equal(copy["first_frame"], first)
        assert copy["latents"].shape == task.videos[0]["latents"].shape
    assert 0 < task.loss(task.model).item() < 10
    with pytest.raises(UsageError, match="--shift-copies applies to --lora"):
        TrainConfig(shift_copies=2)
    with pytest.raises(UsageError, match="--shift-copies -1"):
        _config(data, shift_copies=-1)
