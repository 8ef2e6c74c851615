"""`fpk train` on the synthetic world: a few steps, the loss falls, checkpoints resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open

from fpk.errors import UsageError
from fpk.train.checkpoints import RESUME
from fpk.train.logs import LOG, read_log
from fpk.train.training import TrainConfig, train


def _losses(run: Path, component: str) -> list[float]:
    return [row["loss"] for row in read_log(run / component / LOG)]


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
    assert [row["step"] for row in read_log(runs / "transformer" / LOG)][-1] == 23
    with safe_open(str(ckpt), "pt") as f:  # the finished checkpoint: no optimizer moments
        assert f.metadata()["step"] == "23" and not any(k.startswith("optim.") for k in f.keys())
    with safe_open(str(runs / "transformer" / RESUME), "pt") as f:
        assert any(k.startswith("optim.") for k in f.keys())


def test_a_stopped_run_saves_where_it_stopped_and_resumes_there(small_preset, tmp_path):
    """Stopped between checkpoints (Ctrl-C, or SIGTERM from `timeout` or a scheduler), a run
    keeps the steps it made: checkpoints and exported weights at the step it stopped at."""
    cfg = TrainConfig(steps=40, batch=2, scenes=2, warmup=2, checkpoint_every=100)
    weights, runs = tmp_path / "w", tmp_path / "run"
    calls = iter(range(100))
    ckpt = train(small_preset, weights, runs, cfg, should_stop=lambda: next(calls) >= 3)
    for path in (ckpt, runs / "transformer" / RESUME):
        with safe_open(str(path), "pt") as f:
            assert f.metadata()["step"] == "3"
            assert json.loads(f.metadata()["log"])[0]["step"] == 3
    assert [row["step"] for row in read_log(runs / "transformer" / LOG)] == [1, 2, 3]
    assert (weights / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    train(small_preset, weights, runs, TrainConfig(**{**cfg.__dict__, "steps": 5}), resume=True)
    assert [row["step"] for row in read_log(runs / "transformer" / LOG)] == [1, 2, 3, 4, 5]


def test_resume_without_a_checkpoint_fails_before_the_task_is_built(
    small_preset, tmp_path, monkeypatch
):
    """The missing checkpoint is named at once, not after minutes of encoding videos."""
    import fpk.train.training as training

    def never(*args):
        raise AssertionError("the task was built before the checkpoint was looked for")

    monkeypatch.setattr(training, "_task", never)
    with pytest.raises(UsageError, match="--resume: no checkpoint at .*transformer"):
        train(small_preset, tmp_path / "w", tmp_path / "run", TrainConfig(steps=2), resume=True)
    assert not (tmp_path / "w").exists()


def test_vae_trains_and_sets_its_scaling_factor(small_preset, tmp_path):
    cfg = TrainConfig(component="vae", steps=3, batch=4, checkpoint_every=3)
    train(small_preset, tmp_path / "w", tmp_path / "run", cfg)
    config = json.loads((tmp_path / "w" / "vae" / "config.json").read_text())
    assert config["scaling_factor"] != 0.476986  # measured, not the default
    assert len(_losses(tmp_path / "run", "vae")) == 3


def test_vae_decoder_only_keeps_the_encoder_and_the_latent_scale(small_preset, tmp_path):
    """--decoder-only: latents (and a transformer trained on them) stay valid."""
    from safetensors.torch import load_file

    weights, runs = tmp_path / "w", tmp_path / "run"
    train(small_preset, weights, runs, TrainConfig(component="vae", steps=2, batch=4))
    vae = weights / "vae"
    before = load_file(vae / "diffusion_pytorch_model.safetensors")
    scale = json.loads((vae / "config.json").read_text())["scaling_factor"]
    cfg = TrainConfig(component="vae", steps=3, batch=4, lr=1e-3, warmup=1, decoder_only=True)
    train(small_preset, weights, runs, cfg)
    after = load_file(vae / "diffusion_pytorch_model.safetensors")
    changed = {k for k in before if not (before[k] == after[k]).all()}
    assert changed and all(k.startswith(("decoder.", "post_quant_conv.")) for k in changed)
    assert json.loads((vae / "config.json").read_text())["scaling_factor"] == scale
    with pytest.raises(Exception, match="--decoder-only"):
        train(small_preset, weights, runs, TrainConfig(steps=1, decoder_only=True))


def test_vae_draws_continuous_scenes_in_their_proportion_from_any_phase():
    from types import SimpleNamespace

    import torch

    from fpk.synthetic import world
    from fpk.train.vae import VaeTask

    vae = SimpleNamespace(encoder=torch.nn.Linear(1, 1), quant_conv=torch.nn.Linear(1, 1),
                          to=lambda device: None)  # fmt: skip
    task = VaeTask(SimpleNamespace(vae=vae), TrainConfig(component="vae", continuous=300))
    drawn = [task.scene(1) for _ in range(400)]
    moving = [(s, f) for s, f in drawn if s.goal in world.MOTIONS]
    assert 0.33 < len(moving) / len(drawn) < 0.53  # 300 / (300 + 400 scenes) = 0.43, 4 sigma
    assert len({f for _, f in moving}) > 40  # every phase of the motion, not only its start
    assert max(f for _, f in moving) < VaeTask.CONTINUOUS_FIRST
    assert all(f == 0 for s, f in drawn if s.goal not in world.MOTIONS)  # goal scenes as before
    plain = VaeTask(SimpleNamespace(vae=vae), TrainConfig(component="vae"))
    assert all(plain.scene(40)[0].goal not in world.MOTIONS for _ in range(100))


def test_motion_loss_sees_a_stutter_and_not_a_steady_error():
    from types import SimpleNamespace

    import torch

    from fpk.model import conditioning as cond
    from fpk.synthetic import world
    from fpk.train.vae import VaeTask

    vae = SimpleNamespace(encoder=torch.nn.Linear(1, 1), quant_conv=torch.nn.Linear(1, 1),
                          to=lambda device: None)  # fmt: skip

    def task(weight):
        return VaeTask(SimpleNamespace(vae=vae), TrainConfig(component="vae", motion_loss=weight))

    x = cond.to_tensor(world.render(world.continuous_scene(0), 5))[None]  # (1, 3, 5, H, W)
    stutter = x.clone()
    stutter[:, :, 2] = x[:, :, 1]  # stops for a frame, catches up at the next
    plain, motion = task(0.0).reconstruction(stutter, x), task(1.0).reconstruction(stutter, x)
    assert motion - plain > (stutter - x).abs().mean()  # the move's error counts twice
    offset = x + 0.1  # the same error in every frame: no motion error
    assert torch.isclose(task(1.0).reconstruction(offset, x), task(0.0).reconstruction(offset, x))
    assert task(1.0).reconstruction(x, x) == 0
    with pytest.raises(UsageError, match="--motion-loss"):
        TrainConfig(motion_loss=1.0)


def _small_vae(attention: bool):
    from fpk.config import VaeSpec
    from fpk.model.tiny import TinySizes, build_vae

    sizes = TinySizes(vae_channels=(8, 16, 16), vae_groups=2, vae_attention=attention)
    return build_vae(VaeSpec(4, 4, 4), sizes)


@pytest.mark.parametrize("shift", [0.0, 3.0])
def test_steady_norms_start_the_output_norms_as_a_fixed_scale(shift):
    """After `steady_norms`, the decoder's last GroupNorm passes its signal channels at a gain
    near 1 whatever the clip's content (a random one, or the same shifted by a constant)."""
    import torch

    from fpk.model.tiny import steady_norms

    torch.manual_seed(0)
    vae = _small_vae(attention=False)
    steady_norms(vae)
    seen = {}
    norm = vae.decoder.conv_norm_out
    norm.register_forward_hook(lambda m, i, o: seen.update(x=i[0], y=o))
    with torch.no_grad():
        vae.decode(torch.randn(1, 4, 2, 4, 4) + shift)
    x, y = seen["x"], seen["y"]
    per = norm.num_channels // norm.num_groups
    signal = [c for c in range(norm.num_channels) if c % per >= 2]
    xs, ys = x[:, signal], y[:, signal] - norm.bias[signal].view(1, -1, 1, 1, 1)
    gain = (ys.std() / xs.std()).item()
    assert 0.8 < gain < 1.25
    corr = torch.corrcoef(torch.stack([xs.flatten(), ys.flatten()]))[0, 1].item()
    assert corr > 0.95


def test_frames_as_images_is_the_same_network():
    """One frame through the causal VAE as 2D convolutions: same output, same gradients, and
    clips of more than one frame still go through the 3D path."""
    import torch

    from fpk.train.vae import frames_as_images

    torch.manual_seed(0)
    vae = _small_vae(attention=True)

    def run(x):
        vae.zero_grad()
        y = vae.decode(vae.encode(x).latent_dist.mode()).sample
        (y * torch.linspace(-1, 1, y.numel()).view(y.shape)).sum().backward()
        return y.detach(), [p.grad.clone() for p in vae.parameters()]

    for frames in (1, 5):
        x = torch.rand(2, 3, frames, 16, 16) * 2 - 1
        want, want_grads = run(x)
        with frames_as_images(vae):
            got, got_grads = run(x)
        # float summation order only (kernel summed over time first); seen up to 3e-5
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        scale = max(w.abs().max().item() for w in want_grads)
        for g, w in zip(got_grads, want_grads, strict=True):  # float summation order only
            torch.testing.assert_close(g, w, atol=1e-4 * scale, rtol=1e-3)
    assert all("forward" not in vars(m) for m in vae.modules())  # patched back


def test_inflate_causal_makes_each_latent_frame_one_pixel_frame():
    """After `inflate_causal`, a single frame encodes and decodes exactly as before, and in a
    world clip latent frame t is the image latent of pixel frame 4t (up to the GroupNorms'
    clip-wide statistics) and no other."""
    import torch

    from fpk.model.tiny import inflate_causal
    from fpk.synthetic import world

    torch.manual_seed(0)
    vae = _small_vae(attention=False)
    clip = world.render(world.Scene("red", "square", "checkered", (8, 8), "bottom right"), 17)
    x = (torch.from_numpy(clip).float() / 127.5 - 1).permute(3, 0, 1, 2)[None]
    with torch.no_grad():
        before = vae.decode(vae.encode(x[:, :, :1]).latent_dist.mode()).sample
        inflate_causal(vae)
        after = vae.decode(vae.encode(x[:, :, :1]).latent_dist.mode()).sample
        torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)
        z = vae.encode(x).latent_dist.mode()[0]
        images = [vae.encode(x[:, :, f : f + 1]).latent_dist.mode()[0, :, 0] for f in range(17)]
    assert z.shape[1] == 5
    for t in range(5):
        dist = torch.stack([(z[:, t] - im).norm() for im in images])
        assert dist.argmin().item() == 4 * t, dist
        assert dist[4 * t] < 0.1 * z[:, t].norm()  # measured 2-3 %; other frames 50-80 %


def test_salient_words_give_the_words_unit_scale(tiny_saved):
    """At the default init (std 0.02) a word reaches the transformer as a vector of RMS ~0.02,
    far under its `proj_in` bias; `salient_words` (what `fpk train` gives a new tiny Llama)
    makes the features, and the difference one word makes, of unit scale."""
    import copy

    import torch

    from fpk.model import conditioning as cond
    from fpk.model.tiny import salient_words

    _, comps, _ = tiny_saved

    class C:
        tokenizer, text_encoder = comps["tokenizer"], copy.deepcopy(comps["text_encoder"])
        tokenizer_2, text_encoder_2 = comps["tokenizer_2"], comps["text_encoder_2"]

    def rms() -> tuple[float, float]:
        a, b = (
            cond.encode_prompt(
                C, f"the red square moves to the top {w} corner", "cpu", torch.float32
            )
            for w in ("left", "right")
        )
        word = (a.embeds - b.embeds).norm(dim=-1).max()  # at the one token that differs
        return a.embeds.pow(2).mean().sqrt().item(), (word / a.embeds.shape[-1] ** 0.5).item()

    before = rms()
    salient_words(C.text_encoder)
    assert abs(C.text_encoder.get_input_embeddings().weight.std().item() - 1) < 1e-4
    after = rms()
    assert max(before) < 0.1 and min(after) > 0.5, (before, after)
    salient_words(C.text_encoder)  # idempotent
    assert abs(rms()[0] - after[0]) < 1e-5


def test_first_sections_are_the_inverted_orders_first(small_preset, tmp_path):
    """`sample_one(first=True)`: the end of the video, from the start image alone."""
    import torch

    from fpk.model.tiny import ensure_components
    from fpk.sampling.orders import plan_sections
    from fpk.synthetic import world
    from fpk.train.sections import SectionTask, load

    ensure_components(small_preset, tmp_path / "w", world.vocabulary())
    comps = load(small_preset, tmp_path / "w")
    task = SectionTask(small_preset, comps, TrainConfig(scenes=1))
    for sections in (1, 4, 6):
        video, ctx, positions, target = task.sample_one(first=True, sections=sections)
        step = plan_sections("inverted", sections, task.window, "released")[0]
        assert step.order == 0 and step.end_anchor
        torch.testing.assert_close(
            target, video["latents"][:, step.target.start : step.target.stop]
        )
        assert positions[0] > 0 and len(positions) == task.window


def test_sampler_trains_on_sections_of_that_order_only(small_preset, tmp_path):
    """`--sampler vanilla`: every section is laid out as vanilla sampling lays it out (the
    past as history, no end anchor, true positions); `first` is vanilla's first section."""
    import dataclasses

    import torch

    from fpk.model.context import model_shift, section_context
    from fpk.model.tiny import ensure_components
    from fpk.sampling.orders import known_frames, plan_sections
    from fpk.synthetic import world
    from fpk.train.sections import SectionTask, load

    ensure_components(small_preset, tmp_path / "w", world.vocabulary())
    task = SectionTask(small_preset, load(small_preset, tmp_path / "w"),
                       TrainConfig(scenes=1, sampler="vanilla"))  # fmt: skip
    video = task.videos[0]
    plan = plan_sections("vanilla", 4, task.window)
    seen = set()
    for i in range(40):
        first = i % 4 == 0
        _, ctx, positions, target = task.sample_one(first=first, sections=4, video=video)
        start = int(positions[0])
        step = next(s for s in plan if s.target.start == start)  # true positions: shift 0
        assert not first or step.order == 0
        known = {p: video["latents"][:, p] for p in known_frames(plan, step.order)}
        shift = model_shift(step, task.model_schedule, "released")
        want = section_context(step, task.model_schedule, task.grid, known, shift,
                               video["latents"][:, 0])  # fmt: skip
        assert len(ctx) == len(want)
        for got, exp in zip(ctx, want, strict=True):
            for a, b in zip(dataclasses.astuple(got), dataclasses.astuple(exp), strict=True):
                assert a == b if not isinstance(a, torch.Tensor) else torch.equal(a, b)
        torch.testing.assert_close(
            target, video["latents"][:, step.target.start : step.target.stop]
        )
        seen.add(step.order)
    assert seen == {0, 1, 2, 3}
    with pytest.raises(UsageError, match="--sampler 'sideways'"):
        TrainConfig(sampler="sideways")
    with pytest.raises(UsageError, match="PADDING one of"):
        TrainConfig(sampler="inverted:never")
    assert TrainConfig(sampler="anti-drifting").order_padding() == ("anti-drifting", "time-true")


def test_probe_task_loads_a_trained_model_for_the_probes(tiny_saved):
    """benchmarks/goal_probe.py and prompt_probe.py start from it (it once refused scenes=0)."""
    from fpk.train.sections import probe_task

    _, _, folder = tiny_saved
    task = probe_task(folder)
    assert not task.model.training and len(task.videos) == 1


@pytest.fixture
def task_with_motion(small_preset, tmp_path):
    from fpk.model.tiny import ensure_components
    from fpk.synthetic import world
    from fpk.train.sections import SectionTask, load

    ensure_components(small_preset, tmp_path / "w", world.vocabulary())
    comps = load(small_preset, tmp_path / "w")
    return SectionTask(small_preset, comps, TrainConfig(scenes=1, continuous=2))


def test_continuous_scenes_are_encoded_moving_to_the_end(task_with_motion):
    import torch

    from fpk.synthetic import world

    videos = task_with_motion.videos
    assert [v["scene"].goal in world.MOTIONS for v in videos] == [False, True, True]
    lat = videos[1]["latents"]
    assert lat.shape == videos[0]["latents"].shape
    assert not torch.equal(lat[:, -1], lat[:, -2])  # still moving at the end


def test_start_frames_are_text_to_videos_first_section(task_with_motion):
    import torch

    from fpk.model.call import blank_image_embeds

    video, ctx, positions, target = task_with_motion.sample_text_start()
    assert ctx == [] and positions.tolist() == [0]
    assert torch.equal(target, video["latents"][:, :1])
    blank = blank_image_embeds(task_with_motion.comps, torch.float32)
    assert torch.equal(video["image_embeds"], blank)


def test_reverse_sections_are_laid_out_as_extend_reverse(task_with_motion):
    """[anchor = the clip's first frame][new part: the true past][clip head]."""
    import torch

    from fpk.model.context import ANCHOR_POSITION
    from fpk.sampling.orders import plan_sections

    task = task_with_motion
    lat = task.videos[1]["latents"]
    w = task.window
    plan = plan_sections("inverted", 2, w, "released")
    for _ in range(6):
        video, ctx, positions, target = task.sample_reverse(task.videos[1], 2, clip=3, past=4)
        start = 4 - 1  # the video's latent frame at timeline position 1 (past=4)
        found = [t for t in range(lat.shape[1] - w + 1)
                 if torch.equal(target, lat[:, t : t + w])]  # fmt: skip
        assert found and found[0] - start in {s.target.start for s in plan}  # the true past
        anchor = ctx[-1]
        assert anchor.positions.tolist() == [ANCHOR_POSITION]
        assert torch.equal(anchor.latents[:, 0], lat[:, 4 + 2 * w])  # the clip's first frame
        assert not torch.equal(video["image_embeds"], task.videos[1]["image_embeds"])


def test_training_mixes_every_kind_of_sample(small_preset, tmp_path):
    cfg = TrainConfig(steps=4, batch=2, scenes=1, continuous=1, start_share=0.5,
                      reverse_share=0.5, warmup=1, checkpoint_every=4)  # fmt: skip
    train(small_preset, tmp_path / "w", tmp_path / "run", cfg)
    losses = _losses(tmp_path / "run", "transformer")
    assert len(losses) == 4 and all(0 < x < 10 for x in losses)


def test_context_noise_noises_the_generated_history_only(small_preset, tmp_path):
    """`--context-noise S`: the history frames a vanilla section sees differ from the truth
    (at one level below S per section), the start frame (anchor and position 0) and the
    target do not; without it, the history is the truth."""
    import dataclasses

    import torch

    from fpk.model.context import model_shift, section_context
    from fpk.model.tiny import ensure_components
    from fpk.sampling.orders import known_frames, plan_sections
    from fpk.synthetic import world
    from fpk.train.sections import SectionTask, load

    ensure_components(small_preset, tmp_path / "w", world.vocabulary())
    comps = load(small_preset, tmp_path / "w")
    cfg = TrainConfig(scenes=1, sampler="vanilla", context_noise=0.5)
    noisy = SectionTask(small_preset, comps, cfg)
    video = noisy.videos[0]
    lat = video["latents"]
    known = noisy.history(lat, [0, 1, 2, 3])
    assert torch.equal(known[0], lat[:, 0])
    diffs = [(known[p] - lat[:, p]).std().item() for p in (1, 2, 3)]
    assert all(0 < d < 0.55 for d in diffs) and max(diffs) - min(diffs) < 0.1, diffs
    clean = SectionTask(small_preset, comps, dataclasses.replace(cfg, context_noise=0.0))
    assert all(torch.equal(v, lat[:, p]) for p, v in clean.history(lat, [0, 1, 2]).items())
    plan = plan_sections("vanilla", 4, noisy.window)
    for _ in range(8):
        _, ctx, positions, target = noisy.sample_one(sections=4, video=video)
        start = int(positions[0])
        torch.testing.assert_close(target, lat[:, start : start + noisy.window])
        assert torch.equal(ctx[-1].latents[:, 0], lat[:, 0])  # the anchor: the start frame
        step = next(s for s in plan if s.target.start == start)
        truth = {p: lat[:, p] for p in known_frames(plan, step.order)}
        shift = model_shift(step, noisy.model_schedule, "released")
        want = section_context(step, noisy.model_schedule, noisy.grid, truth, shift, lat[:, 0])
        same = [torch.equal(a.latents, b.latents) for a, b in zip(ctx, want, strict=True)]
        assert same[-1] and (all(same) == (step.order == 0)), (step.order, same)
    with pytest.raises(UsageError, match="--context-noise 2"):
        TrainConfig(context_noise=2.0)
    with pytest.raises(UsageError, match="--context-noise applies"):
        TrainConfig(component="vae", context_noise=0.1)


def test_caption_dropout_trains_a_share_of_samples_on_the_empty_prompt(small_preset, tmp_path):
    """`--caption-dropout P`: about a share P of the samples' prompts are the empty one (encoded
    with the captions before training, so a step never needs the text encoders), the others
    their own caption; without it, always the caption; the loss runs with a mixed batch."""
    import dataclasses

    from fpk.model.tiny import ensure_components
    from fpk.synthetic import world
    from fpk.train.sections import EMPTY_CAPTION, SectionTask, load

    ensure_components(small_preset, tmp_path / "w", world.vocabulary())
    comps = load(small_preset, tmp_path / "w")
    cfg = TrainConfig(scenes=2, batch=4, caption_dropout=0.5)
    task = SectionTask(small_preset, comps, cfg)
    assert EMPTY_CAPTION in task.rt.prompt_cache
    video = task.videos[0]
    drawn = [task.caption(video) for _ in range(400)]
    assert set(drawn) == {EMPTY_CAPTION, video["prompt"]}
    assert 160 < drawn.count(EMPTY_CAPTION) < 240, drawn.count(EMPTY_CAPTION)
    assert 0 < task.loss(task.model).item() < 10
    clean = SectionTask(small_preset, comps, dataclasses.replace(cfg, caption_dropout=0.0))
    assert EMPTY_CAPTION not in clean.rt.prompt_cache
    assert {clean.caption(video) for _ in range(50)} == {video["prompt"]}
    with pytest.raises(UsageError, match="--caption-dropout 1.0"):
        TrainConfig(caption_dropout=1.0)
    with pytest.raises(UsageError, match="--caption-dropout applies"):
        TrainConfig(component="vae", caption_dropout=0.1)


def test_sigterm_stops_a_background_run_with_its_steps_saved(tmp_path):
    """`fpk train` in the background (output to a pipe: plain progress lines) stopped by
    SIGTERM, as `timeout`, `kill` and batch schedulers stop it: it exits cleanly and the run
    resumes from the step it had reached."""
    import signal
    import subprocess

    from tests.procs import fpk_command, fpk_env

    run = tmp_path / "run"
    args = ["train", "--steps", "500", "--batch", "2", "--scenes", "2", "--threads", "1",
            "--checkpoint-every", "1000", "--weights", str(tmp_path / "w"),
            "--run", str(run)]  # fmt: skip
    proc = subprocess.Popen(fpk_command(*args), env=fpk_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        first = proc.stdout.readline()  # the first progress line: training has started
        assert first.startswith("step 5/500 loss "), first + proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    with safe_open(str(run / "tiny" / "transformer" / RESUME), "pt") as f:
        stopped = int(f.metadata()["step"])
    assert 5 <= stopped < 500
    assert "checkpoint" in out and "Traceback" not in err
