"""`fpk train`: train a preset's VAE or FramePack transformer on the synthetic world.

Transformer (FramePack sec. 3): each sample is one section of a world video, with the exact
context inference would give it: a sampling order drawn from inverted (released and
time-true padding), anti-drifting and vanilla, a random video length and a random place in
the order, packed by the preset's schedule through the same code as `fpk generate`
(fpk.model.context). So one model serves every order. Rectified-flow loss on the section's flow
(noise - data), sigma drawn as inference spaces it; AdamW, gradient clipping, an EMA of the
weights (what ships), checkpoints in safetensors (model, EMA, optimizer) every N steps,
`--resume`, and a sample video every N steps.

VAE: the real `AutoencoderKLHunyuanVideo` at a small size, trained on short world clips
(L1 + MSE + a small KL term); its `scaling_factor` is set so latents have unit variance.
`--inflate` makes it frame-wise first; `--decoder-only` keeps the encoder and the latents.
"""

from __future__ import annotations

import json
import math
import random
import time
import types
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fpk import events as ev
from fpk.config import Preset
from fpk.errors import UsageError
from fpk.model.call import predict_flow, section_inputs, target_tokens
from fpk.synthetic import world

#: The tiny VAE's channel widths: small enough to train and encode quickly on a CPU.
TINY_VAE_CHANNELS = (16, 32, 64)
TINY_VAE_GROUPS = 2  # 8 to 32 channels a group: room for steady_norms' constant pair
#: No mid-block attention in the tiny VAE: it costs less per decoded frame, and the world has
#: nothing a 16x16 latent needs attention for.
TINY_VAE_ATTENTION = False
ORDERS_MIX = (  # (order, padding, weight): what the model is trained to serve
    ("inverted", "released", 0.6),
    ("inverted", "time-true", 0.1),
    ("anti-drifting", "time-true", 0.15),
    ("vanilla", "released", 0.15),
)
MAX_SECTIONS = 6  # released padding: [3, 2, .., 2, 1, 0]; longer videos repeat these layouts
STATIC_AFTER = 1 + 4 * 14  # pixel frames to encode; the world is static after ~1 s
GUIDANCE = 10.0


@dataclass(frozen=True)
class TrainConfig:
    component: str = "transformer"
    steps: int = 1000
    batch: int = 8
    lr: float = 5e-4
    warmup: int = 200
    clip: float = 1.0
    ema: float = 0.999
    checkpoint_every: int = 500
    sample_every: int = 0
    scenes: int = 400
    seed: int = 0
    threads: int = 0
    decoder_only: bool = False  # VAE: keep the encoder (and so every latent) as it is
    inflate: bool = False  # VAE: start from fpk.model.tiny.inflate_causal of the loaded weights
    first_share: float = 0.0  # transformer: share of samples that are `sample_one(first=True)`


@dataclass(frozen=True)
class TrainProgress(ev.Event):
    step: int
    steps: int
    loss: float
    lr: float
    seconds: float


# --- components --------------------------------------------------------------------------


def ensure_components(preset: Preset, folder: Path, seed: int = 0) -> None:
    """Random tiny components of the real classes in `folder`, unless already there."""
    from fpk.model.tiny import (
        TinySizes,
        build_components,
        salient_words,
        save_components,
        steady_norms,
    )

    if (folder / "vae" / "config.json").is_file():
        return
    comps = build_components(
        preset,
        world.vocabulary(),
        TinySizes(
            vae_channels=TINY_VAE_CHANNELS,
            vae_groups=TINY_VAE_GROUPS,
            vae_attention=TINY_VAE_ATTENTION,
        ),
        seed,
    )
    steady_norms(comps["vae"])
    salient_words(comps["text_encoder"])
    comps["transformer"].register_to_config(fpk_schedule=preset.schedule.name)
    save_components(comps, folder)


def load(preset: Preset, folder: Path):
    from fpk.model.loading import load_components

    return load_components(preset, folder)


# --- checkpoints -------------------------------------------------------------------------


def save_checkpoint(path: Path, model, ema, optimizer, step: int, log: list[dict]) -> None:
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors |= {f"ema.{k}": v for k, v in ema.state_dict().items()}
    for i, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            tensors[f"optim.{i}.{name}"] = torch.as_tensor(value)
    meta = {"step": str(step), "log": json.dumps(log[-1:])}
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=meta)
    tmp.replace(path)


def load_checkpoint(path: Path, model, ema, optimizer) -> int:
    from safetensors import safe_open

    if not path.is_file():
        raise UsageError(f"--resume: no checkpoint at {path}; train without --resume first")
    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
        step = int(f.metadata()["step"])
        model.load_state_dict({k[6:]: f.get_tensor(k) for k in keys if k.startswith("model.")})
        ema.load_state_dict({k[4:]: f.get_tensor(k) for k in keys if k.startswith("ema.")})
        state: dict[int, dict] = {}
        for k in (k for k in keys if k.startswith("optim.")):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = f.get_tensor(k)
    sd = optimizer.state_dict()
    sd["state"] = state
    optimizer.load_state_dict(sd)
    return step


class Ema(torch.nn.Module):
    """Exponential moving average of a model's parameters (a copy that ships).

    The decay warms up as min(decay, (1 + n) / (10 + n)) over its n updates, so that a short
    run's average is not dominated by the random initial weights.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        super().__init__()
        import copy

        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for e, p in zip(self.model.parameters(), model.parameters(), strict=True):
            e.lerp_(p.detach(), 1 - decay)

    def state_dict(self, *args, **kwargs):  # the averaged model's own keys
        return self.model.state_dict(*args, **kwargs)

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        return self.model.load_state_dict(state, strict=strict)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, t))))


# --- the loop ----------------------------------------------------------------------------


def train(
    preset: Preset,
    weights: Path,
    run: Path,
    cfg: TrainConfig,
    resume: bool = False,
    sink: ev.EventSink = ev.ignore,
    should_stop: Callable[[], bool] | None = None,
) -> Path:
    """Train `cfg.component` of `preset` in `weights` (created if missing); logs and
    checkpoints in `run`. Returns the checkpoint path."""
    if cfg.component not in ("vae", "transformer"):
        raise UsageError(f"--component '{cfg.component}' (valid: vae, transformer)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if (cfg.decoder_only or cfg.inflate) and cfg.component != "vae":
        raise UsageError("--decoder-only and --inflate apply to --component vae")
    torch.manual_seed(cfg.seed)
    ensure_components(preset, weights, cfg.seed)
    comps = load(preset, weights)
    if cfg.inflate:
        from fpk.model.tiny import inflate_causal

        inflate_causal(comps.vae)
    task = VaeTask(comps, cfg) if cfg.component == "vae" else SectionTask(preset, comps, cfg)
    model = task.model.train()
    ema = Ema(model, cfg.ema)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=0.01)
    ckpt = run / cfg.component / "checkpoint.safetensors"
    log_path = run / cfg.component / "log.jsonl"
    start = load_checkpoint(ckpt, model, ema, opt) if resume else 0
    ema.updates = start
    if not resume:
        log_path.unlink(missing_ok=True)
    log: list[dict] = []
    t0 = time.perf_counter()
    for step in range(start, cfg.steps):
        if should_stop is not None and should_stop():
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = task.loss(model, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, cfg.clip)
        opt.step()
        ema.update(model)
        entry = {"step": step + 1, "loss": round(loss.item(), 5), "lr": lr_at(step, cfg),
                 "seconds": round(time.perf_counter() - t0, 2)}  # fmt: skip
        log.append(entry)
        sink(TrainProgress("train", step + 1, cfg.steps, entry["loss"], entry["lr"],
                           entry["seconds"]))  # fmt: skip
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            _flush(log_path, log)
            save_checkpoint(ckpt, model, ema, opt, step + 1, log)
            task.export(task.shipped(model, ema.model), weights)
        if cfg.sample_every and (step + 1) % cfg.sample_every == 0:
            task.sample(ema.model, weights, run / cfg.component / f"sample-{step + 1:06d}.mp4")
    _flush(log_path, log)
    plot_loss(log_path, log_path.with_name("loss.png"))
    return ckpt


def plot_loss(log_path: Path, png: Path, window: int = 50) -> None:
    """The loss curve of a run (every step, and a running mean), across resumed runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    if not rows:
        return
    steps = np.array([r["step"] for r in rows])
    loss = np.array([r["loss"] for r in rows])
    smooth = (
        np.convolve(loss, np.ones(window) / window, mode="valid") if len(loss) > window else loss
    )
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, loss, alpha=0.3, label="loss per step")
    ax.plot(steps[len(steps) - len(smooth) :], smooth, label=f"mean of {window} steps")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("flow-matching MSE" if "transformer" in str(log_path) else "L1 + MSE")
    ax.set_yscale("log")
    ax.set_title(f"{log_path.parent.name} training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def _flush(path: Path, log: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for entry in log:
            f.write(json.dumps(entry) + "\n")
    log.clear()


# --- VAE ---------------------------------------------------------------------------------


@contextmanager
def frames_as_images(vae):
    """Single frames through the causal VAE as the 2D network they amount to.

    A causal convolution pads time by replicating the first frame, so on a one-frame input its
    3x3x3 kernel sees three copies of that frame: exactly a 3x3 convolution with the kernel
    summed over time. Run that way (the same parameters, the same result, gradients
    included) an image step costs several times less on a CPU than the 3D convolution.
    """
    from diffusers.models.autoencoders.autoencoder_kl_hunyuan_video import (
        HunyuanVideoCausalConv3d,
    )

    def as_2d(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        if x.shape[2] != 1 or conv.padding != (0, 0, 0) or conv.dilation != (1, 1, 1):
            return type(self).forward(self, x)
        x = torch.nn.functional.pad(x[:, :, 0], self.time_causal_padding[:4], mode=self.pad_mode)
        return torch.nn.functional.conv2d(x, conv.weight.sum(2), conv.bias, conv.stride[1:])[
            :, :, None
        ]

    convs = [m for m in vae.modules() if isinstance(m, HunyuanVideoCausalConv3d)]
    for m in convs:
        m.forward = types.MethodType(as_2d, m)
    try:
        yield vae
    finally:
        for m in convs:
            del m.forward


class VaeTask:
    """Reconstruct world frames: L1 + MSE of the decoded posterior mean (fpk encodes with the
    mean), with a little latent noise so that the decoder tolerates imperfect latents, plus a
    small KL term that keeps the posterior's scale in check.

    Image first, as causal video VAEs are trained: the first IMAGE_FRACTION of the steps see
    single frames (4 x the batch; the causal VAE encodes a frame alone exactly as it encodes a
    clip's first frame), the rest 9-frame clips, so that the cheap steps teach shapes and
    colours and the dear ones motion within a latent frame. (Measured on the tiny VAE: 330
    clip steps did not get there; its latents smeared a moving object over several latent
    frames.) `--inflate` then makes the VAE frame-wise (`fpk.model.tiny.inflate_causal`) and
    `--decoder-only` trains the decoder alone on chunks decoded as `fpk generate` decodes
    them (`_chunk_loss`), which is how the shipped tiny VAE learned motion (model card).
    """

    CLIP = 9  # pixel frames: 1 + 4 * 2
    KL = 1e-6
    LATENT_NOISE = 0.05
    IMAGE_FRACTION = 0.7
    CHUNK = 3  # latent frames a decoder-only step decodes
    DECODER_STARTS = 8  # the world moves in its first ~25 pixel frames (latents 0..6)

    def __init__(self, comps, cfg: TrainConfig) -> None:
        self.model = comps.vae
        self.model.use_framewise_encoding = self.model.use_framewise_decoding = False
        self.batch = max(1, cfg.batch // 4)
        self.decoder_only = cfg.decoder_only
        self.image_steps = 0 if cfg.decoder_only else int(cfg.steps * self.IMAGE_FRACTION)
        self.rng = np.random.default_rng(cfg.seed)
        if cfg.decoder_only:
            for part in (self.model.encoder, self.model.quant_conv):
                part.requires_grad_(False)

    def clips(self, frames: int = CLIP, count: int | None = None) -> torch.Tensor:
        out = []
        for _ in range(count or self.batch):
            s = world.sample_scene(self.rng)
            first = int(self.rng.integers(0, 40))
            out.append(torch.from_numpy(world.render(s, frames, first)))
        x = torch.stack(out).float() / 127.5 - 1  # (B, F, H, W, 3)
        return x.permute(0, 4, 1, 2, 3)

    def loss(self, vae, step: int = 0) -> torch.Tensor:
        if self.decoder_only:
            return self._chunk_loss(vae)
        if step < self.image_steps:
            with frames_as_images(vae):
                return self._loss(vae, self.clips(1, 4 * self.batch))
        return self._loss(vae, self.clips())

    def _chunk_loss(self, vae) -> torch.Tensor:
        """Decoder only, as `fpk generate` decodes: latents of a video encoded from its first
        frame, decoded from latent frame `a` on (the chunk's first latent stands for pixel
        frame 4a alone), against pixel frames 4a .. 4(a + CHUNK - 1). Starts are drawn where
        the world moves (its first DECODER_STARTS latent frames)."""
        from fpk.model import conditioning as cond

        t = self.model.config.temporal_compression_ratio
        xs, zs = [], []
        for _ in range(self.batch):
            s = world.sample_scene(self.rng)
            a = int(self.rng.integers(0, self.DECODER_STARTS))
            x = cond.to_tensor(world.render(s, 1 + t * (a + self.CHUNK - 1)))[None]
            with torch.no_grad():
                zs.append(vae.encode(x).latent_dist.mode()[:, :, a:])
            xs.append(x[:, :, t * a :])
        x, z = torch.cat(xs), torch.cat(zs)
        y = vae.decode(z + self.LATENT_NOISE * z.std() * torch.randn_like(z)).sample
        return (y - x).abs().mean() + ((y - x) ** 2).mean()

    def _loss(self, vae, x: torch.Tensor) -> torch.Tensor:
        post = vae.encode(x).latent_dist
        z = post.mode()
        y = vae.decode(z + self.LATENT_NOISE * z.detach().std() * torch.randn_like(z)).sample
        return (y - x).abs().mean() + ((y - x) ** 2).mean() + self.KL * post.kl().mean()

    @staticmethod
    def shipped(model, averaged):
        """The VAE ships its raw weights: it trains briefly and fast, so the EMA lags."""
        return model

    @torch.no_grad()
    def export(self, vae, weights: Path) -> None:
        """Save with scaling_factor = 1 / std of the latents, so that they are unit-variance."""
        if not self.decoder_only:  # the encoder, and so the latents' scale, are unchanged
            x = torch.cat([self.clips() for _ in range(4)])
            std = vae.encode(x).latent_dist.mode().std().item()
            vae.register_to_config(scaling_factor=round(1 / std, 6))
        vae.save_pretrained(weights / "vae", safe_serialization=True)

    def sample(self, vae, weights: Path, path: Path) -> None:
        """A reconstruction strip next to the source (PNG)."""
        from PIL import Image

        with torch.no_grad():
            x = self.clips()[:1]
            y = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        row = torch.cat([x[0], y[0]], dim=-2)  # (3, F, 2H, W)
        img = ((row.permute(2, 1, 3, 0).flatten(1, 2) + 1) * 127.5).byte().numpy()
        Image.fromarray(img).save(path.with_suffix(".png"))


# --- transformer -------------------------------------------------------------------------


class SectionTask:
    """One section per sample, with the context inference gives it (see module doc)."""

    def __init__(self, preset: Preset, comps, cfg: TrainConfig) -> None:
        from fpk.run.pipeline import Runtime

        self.preset, self.comps, self.cfg = preset, comps, cfg
        self.model = comps.transformer
        self.window = preset.sampling.window
        self.grid = preset.latent_grid()
        self.rt = Runtime(preset, comps, torch.device("cpu"), torch.float32)
        self.rng = random.Random(cfg.seed)
        comps.vae.use_framewise_encoding = False  # one pass per clip: faster than tiles here
        self.videos = [encode_scene(comps, self.rt, seed) for seed in range(cfg.scenes)]

    def sample_one(self, first: bool = False, sections: int | None = None):
        """A random section with its context; `first`: the section generated first under the
        inverted order with released padding (the end of the video, nothing known but the
        start image), where the goal can only come from the prompt; `sections`: the video's
        length (default: drawn from 1 to MAX_SECTIONS)."""
        from fpk.model.context import model_shift, section_context
        from fpk.sampling.orders import known_frames, plan_sections

        video = self.rng.choice(self.videos)
        order, padding = self.rng.choices(
            [(o, p) for o, p, _ in ORDERS_MIX], [w for *_, w in ORDERS_MIX]
        )[0]
        if first:
            order, padding = "inverted", "released"
        sections = sections or self.rng.randint(1, MAX_SECTIONS)
        plan = plan_sections(order, sections, self.window, padding)
        step = plan[0 if first else self.rng.randrange(sections)]
        lat = video["latents"]
        known = {p: lat[:, p] for p in known_frames(plan, step.order)}
        shift = model_shift(step, self.model_schedule, padding)
        ctx = section_context(step, self.model_schedule, self.grid, known, shift, lat[:, 0])
        target = lat[:, step.target.start : step.target.stop]
        return video, ctx, torch.tensor(list(step.target)) + shift, target

    @property
    def model_schedule(self):
        return self.rt.schedule

    def loss(self, model, step: int = 0) -> torch.Tensor:
        from fpk.sampling.sigmas import shift_mu, time_shift

        share = self.cfg.first_share
        items = [self.sample_one(first=self.rng.random() < share) for _ in range(self.cfg.batch)]
        x0 = torch.stack([t for *_, t in items])  # (B, C, S, h, w)
        b = x0.shape[0]
        mu = shift_mu(target_tokens(model.config, x0))
        sigma = torch.tensor([time_shift(self.rng.random() * 0.999 + 0.001, mu) for _ in range(b)])
        noise = torch.randn_like(x0)
        s = sigma.view(-1, 1, 1, 1, 1)
        xt = (1 - s) * x0 + s * noise
        pred = self.flow(model, items, xt, sigma, [v["prompt"] for v, *_ in items])
        return torch.nn.functional.mse_loss(pred, noise - x0)

    def flow(self, model, items, xt: torch.Tensor, sigma: torch.Tensor, prompts: list[str]):
        """The model's predicted flow for `sample_one` items at noisy latents `xt`, `sigma`."""
        inputs = section_inputs(
            [self.rt.prompt(t) for t in prompts],
            torch.cat([v["image_embeds"] for v, *_ in items]),
            torch.stack([pos for _, _, pos, _ in items]),
            [ctx for _, ctx, _, _ in items],
            GUIDANCE,
        )
        return predict_flow(model, xt, sigma, inputs)

    @staticmethod
    def shipped(model, averaged):
        return averaged

    def export(self, model, weights: Path) -> None:
        model.register_to_config(fpk_schedule=self.rt.schedule.name)
        model.save_pretrained(weights / "transformer", safe_serialization=True)

    def sample(self, model, weights: Path, path: Path) -> None:
        """A 2 s held-out video with the current EMA weights, through `fpk generate`'s code."""
        from fpk.run.jobs import resolve_job
        from fpk.run.pipeline import run_job

        s = world.scene(world.HELD_OUT + 1)
        folder = path.parent / "sample-input"
        folder.mkdir(parents=True, exist_ok=True)
        from PIL import Image

        Image.fromarray(world.render_frame(s, 0)).save(folder / "start.png")
        job = resolve_job(
            self.preset,
            {"image": str(folder / "start.png"), "prompt": s.prompt, "len": "2s", "steps": 10},
            {"name": path.stem},
            path.parent,
        )
        self.rt.components.transformer = model
        try:
            run_job(self.rt, job)
        finally:
            self.rt.components.transformer = self.model


def probe_task(weights: Path, threads: int = 0, preset: str = "tiny") -> SectionTask:
    """A SectionTask over `weights` with no scenes encoded (probes set `videos`), its
    transformer in eval mode: what the benchmarks that question a trained model start from."""
    from fpk.config import load_preset

    if threads:
        torch.set_num_threads(threads)
    p = load_preset(preset)
    task = SectionTask(p, load(p, weights), TrainConfig(scenes=0, seed=1))
    task.model.eval()
    return task


@torch.no_grad()
def encode_scene(
    comps, rt, seed: int, sections: int = MAX_SECTIONS, scene: world.Scene | None = None
) -> dict:
    """Latents of a world video long enough for `sections` sections, plus its conditions;
    the scene of `seed`, or `scene` where given.

    Only the first STATIC_AFTER frames are encoded: the world is still after that (the
    object has arrived), so later latent frames repeat the last one.
    """
    from fpk.model import conditioning as cond

    s = scene or world.scene(seed)
    window = rt.preset.sampling.window
    latent_frames = 1 + sections * window
    pixels = cond.to_tensor(world.render(s, STATIC_AFTER))  # (3, F, H, W)
    lat = cond.encode_latents(comps.vae, pixels)
    if lat.shape[1] < latent_frames:
        tail = lat[:, -1:].expand(-1, latent_frames - lat.shape[1], -1, -1)
        lat = torch.cat([lat, tail], dim=1)
    embeds = cond.image_embeds(comps, world.render_frame(s, 0), rt.device, rt.dtype)
    return {"latents": lat[:, :latent_frames].contiguous(), "prompt": s.prompt,
            "image_embeds": embeds}  # fmt: skip
