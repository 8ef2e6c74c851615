"""Training the FramePack transformer (FramePack sec. 3): each sample is one section of a
world video with the exact context inference gives it (fpk.model.context), over a mix of
sampling orders, so one model serves every order; and the held-out helpers the probes in
`benchmarks/` start from."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import torch

from fpk.config import Preset
from fpk.model.call import predict_flow, section_inputs, target_tokens
from fpk.model.devices import on_device
from fpk.synthetic import world
from fpk.train.config import TrainConfig

ORDERS_MIX = (  # (order, padding, weight): what the model is trained to serve
    ("inverted", "released", 0.6),
    ("inverted", "time-true", 0.1),
    ("anti-drifting", "time-true", 0.15),
    ("vanilla", "released", 0.15),
)
MAX_SECTIONS = 6  # released padding: [3, 2, .., 2, 1, 0]; longer videos repeat these layouts
STATIC_AFTER = 1 + 4 * 14  # pixel frames to encode; the world is static after ~1 s
GUIDANCE = 10.0
EMPTY_CAPTION = ""  # the prompt of --caption-dropout's samples


def load(preset: Preset, folder: Path, dtype: torch.dtype = torch.float32):
    """The preset's components in `folder`, on the CPU (a task puts what it runs on its
    device), in `dtype`."""
    from fpk.model.loading import load_components

    return load_components(preset, folder, dtype=dtype)


class SectionTask:
    """One section per sample, with the context inference gives it (see module doc)."""

    def __init__(self, preset: Preset, comps, cfg: TrainConfig) -> None:
        from fpk.run.runtime import Runtime

        self.preset, self.comps, self.cfg = preset, comps, cfg
        self.model = comps.transformer
        self.window = preset.sampling.window
        self.grid = preset.latent_grid()
        self.rt = Runtime(preset, comps, *cfg.devices())
        self.rng = random.Random(cfg.seed)
        comps.vae.use_framewise_encoding = False  # one pass per clip: faster than tiles here
        with on_device(self.rt.device, comps.vae, comps.image_encoder):
            self.videos = self.encode_videos()
        self.encode_prompts()
        self.model.to(self.rt.device)
        if cfg.checkpointing:
            self.model.enable_gradient_checkpointing()

    def encode_prompts(self) -> None:
        """Every caption the task will use, encoded once (the runtime's cache), the text
        encoders on the task's device only meanwhile: on a GPU the transformer then trains
        without them beside it (HunyuanVideo's Llama alone is 16 GB in bf16)."""
        comps = self.comps
        captions = {v["prompt"] for v in self.videos + getattr(self, "reg_videos", [])}
        captions.add(self.sample_start()[1])
        if self.cfg.caption_dropout:
            captions.add(EMPTY_CAPTION)
        with on_device(self.rt.device, comps.text_encoder, comps.text_encoder_2):
            for text in sorted(captions):
                self.rt.prompt(text)

    def prompt(self, text: str):
        """The runtime's embeddings of `text`; one not encoded yet (a probe's) is encoded with
        the text encoders on the task's device meanwhile."""
        if text in self.rt.prompt_cache:
            return self.rt.prompt_cache[text]
        with on_device(self.rt.device, self.comps.text_encoder, self.comps.text_encoder_2):
            return self.rt.prompt(text)

    def encode_videos(self) -> list[dict]:
        """The videos sections are drawn from: world scenes 0 .. --scenes - 1, then
        continuous-motion scenes 0 .. --continuous - 1."""
        scenes = [world.scene(seed) for seed in range(self.cfg.scenes)]
        scenes += [world.continuous_scene(seed) for seed in range(self.cfg.continuous)]
        return [encode_scene(self.comps, self.rt, 0, scene=s) for s in scenes]

    def sample_one(self, first: bool = False, sections: int | None = None, video=None):
        """A random section with its context, of an order drawn from ORDERS_MIX (or the one of
        `--sampler`); `first`: the section generated first under the inverted order with
        released padding (or under `--sampler`'s order: for vanilla the video's first), where
        only the start image is known; `sections`: the video's
        length (default: drawn from 1 to the video's sections, MAX_SECTIONS for the world's);
        `video`: one of `videos` (default: drawn)."""
        from fpk.sampling.orders import plan_sections

        video = video or self.rng.choice(self.videos)
        order, padding = self.rng.choices(
            [(o, p) for o, p, _ in ORDERS_MIX], [w for *_, w in ORDERS_MIX]
        )[0]
        fixed = self.cfg.order_padding()  # --sampler: this order only
        if fixed or first:
            order, padding = fixed or ("inverted", "released")
        sections = sections or self.rng.randint(1, video.get("sections", MAX_SECTIONS))
        plan = plan_sections(order, sections, self.window, padding)
        return self.section(video, plan, plan[0 if first else self.rng.randrange(sections)],
                            padding)  # fmt: skip

    def section(self, video: dict, plan, step, padding: str):
        """`step` of `plan` on `video` as a sample (video, context, positions, target): the
        context of the frames the order knows by then (`history`), packed as inference
        packs it."""
        from fpk.model.context import model_shift, section_context
        from fpk.sampling.orders import known_frames

        lat = video["latents"]
        known = self.history(lat, known_frames(plan, step.order))
        shift = model_shift(step, self.model_schedule, padding)
        grid = video.get("grid", self.grid)
        ctx = section_context(step, self.model_schedule, grid, known, shift, lat[:, 0])
        target = lat[:, step.target.start : step.target.stop]
        return video, ctx, torch.tensor(list(step.target)) + shift, target

    def history(self, lat: torch.Tensor, positions) -> dict[int, torch.Tensor]:
        """The known latent frames a section sees, by position. With `--context-noise S`,
        those inference generates (every one but the start frame, position 0) get Gaussian
        noise at one level drawn from [0, S) per section, so the model learns to read a
        history that is not exactly the truth, as its own output never is; the start frame
        (the user's image) stays clean, as at inference."""
        level = self.rng.random() * self.cfg.context_noise if self.cfg.context_noise else 0.0
        out = {}
        for p in positions:
            x = lat[:, p]
            out[p] = x + level * torch.randn_like(x) if level and p else x
        return out

    @property
    def model_schedule(self):
        return self.rt.schedule

    def loss(self, model, step: int = 0) -> torch.Tensor:
        from fpk.sampling.sigmas import shift_mu, time_shift

        items = self.batch_items()
        x0 = torch.stack([t for *_, t in items])  # (B, C, S, h, w)
        b = x0.shape[0]
        mu = shift_mu(target_tokens(model.config, x0))
        sigma = torch.tensor([time_shift(self.rng.random() * 0.999 + 0.001, mu) for _ in range(b)])
        noise = torch.randn_like(x0)
        s = sigma.view(-1, 1, 1, 1, 1).to(x0.device)
        xt = (1 - s) * x0 + s * noise
        pred = self.flow(model, items, xt, sigma, [self.caption(v) for v, *_ in items])
        return torch.nn.functional.mse_loss(pred.float(), noise - x0)  # in fp32 at any dtype

    def batch_items(self) -> list:
        """`--batch` sections of `sample_one`, `--first-share` of them first sections and
        `--reverse-share` of them `sample_reverse`; or, on `--start-share` of the steps, a
        batch of `sample_text_start` (a batch holds sections of one length)."""
        cfg = self.cfg
        if cfg.start_share and self.rng.random() < cfg.start_share:
            return [self.sample_text_start() for _ in range(cfg.batch)]
        items = []
        for _ in range(cfg.batch):
            r = self.rng.random()
            if r < cfg.first_share:
                items.append(self.sample_one(first=True))
            elif r < cfg.first_share + cfg.reverse_share:
                items.append(self.sample_reverse())
            else:
                items.append(self.sample_one())
        return items

    def caption(self, video: dict) -> str:
        """The prompt a sample of `video` trains with: its caption, or, on a share
        `--caption-dropout` of the samples, the empty prompt, so that what the clips show is
        learnt from the frames and the start image rather than tied to their captions' words
        (a common guard where few clips each have their own caption)."""
        p = self.cfg.caption_dropout
        return EMPTY_CAPTION if p and self.rng.random() < p else video["prompt"]

    def sample_text_start(self, video=None):
        """Text-to-video's first section (fpk.run.pipeline.text_conditions): the start frame
        alone at position 0, from the prompt, with no context and blank image features."""
        from fpk.model.call import blank_image_embeds

        video = video or self.rng.choice(self.videos)
        blank = blank_image_embeds(self.comps, self.rt.dtype)
        return {**video, "image_embeds": blank}, [], torch.tensor([0]), video["latents"][:, :1]

    def sample_reverse(self, video=None, sections: int | None = None, clip: int | None = None,
                       past: int | None = None):  # fmt: skip
        """A section of `fpk extend --reverse` (fpk.run.extend): the timeline [anchor][new
        sections][clip head], the anchor being the clip's first frame (and its image
        features), generated in the inverted order toward the anchor; the new part is the
        world's true past of the clip. Drawn unless given: `sections` of the new part (1 to
        4), `clip` latent frames of the clip head, `past`: the video's latent frame the new
        part starts at."""
        from fpk.model import conditioning as cond
        from fpk.model.context import model_shift, section_context
        from fpk.sampling.orders import known_frames, plan_sections

        video = video or self.rng.choice(self.videos)
        lat, w = video["latents"], self.window
        n = lat.shape[1]
        sections = sections or self.rng.randint(1, min(4, (n - 2) // w))
        clip = clip or self.rng.randint(1, n - 1 - sections * w)
        past = past or self.rng.randint(1, n - sections * w - clip)
        head = past + sections * w
        timeline = {p: lat[:, past + p - 1] for p in range(1, sections * w + clip + 1)}
        timeline[0] = lat[:, head]
        plan = plan_sections("inverted", sections, w, "released")
        step = plan[self.rng.randrange(sections)]
        first = 1 + sections * w
        positions = known_frames(plan, step.order) | set(range(first, first + clip))
        known = {p: timeline[p] for p in positions}
        shift = model_shift(step, self.model_schedule, "released")
        grid = video.get("grid", self.grid)
        ctx = section_context(step, self.model_schedule, grid, known, shift, timeline[0])
        target = torch.stack([timeline[p] for p in step.target], dim=1)
        frame = world.render_frame(video["scene"], world_frame(head))
        encoder = self.comps.image_encoder  # where encoding left it; `flow` moves the result
        embeds = cond.image_embeds(self.comps, frame, encoder.device, self.rt.dtype)
        return ({**video, "image_embeds": embeds}, ctx,
                torch.tensor(list(step.target)) + shift, target)  # fmt: skip

    def flow(self, model, items, xt: torch.Tensor, sigma: torch.Tensor, prompts: list[str]):
        """The model's predicted flow for `sample_one` items at noisy latents `xt`, `sigma`."""
        inputs = section_inputs(
            [self.prompt(t) for t in prompts],
            torch.cat([v["image_embeds"].to(self.rt.device) for v, *_ in items]),
            torch.stack([pos for _, _, pos, _ in items]),
            [ctx for _, ctx, _, _ in items],
            GUIDANCE,
        )
        return predict_flow(model, xt, sigma, inputs.to(self.rt.device, self.rt.dtype))

    ships_average = True  # the EMA of the weights ships

    def state(self, model) -> dict[str, torch.Tensor]:
        """What a checkpoint keeps of the model."""
        return model.state_dict()

    def export(self, model, weights: Path, folder: Path) -> None:
        model.register_to_config(fpk_schedule=self.rt.schedule.name)
        model.save_pretrained(weights / "transformer", safe_serialization=True)

    def sample_start(self) -> tuple:
        """The validation sample's start frame (H, W, 3), prompt and job settings: a held-out
        world scene."""
        s = world.scene(world.HELD_OUT + 1)
        return world.render_frame(s, 0), s.prompt, {"steps": 10}

    def sample(self, model, weights: Path, path: Path) -> None:
        """A 2 s video from `sample_start` with the current EMA weights, through `fpk
        generate`'s code."""
        from PIL import Image

        from fpk.run.jobs import resolve_job
        from fpk.run.pipeline import run_job

        image, prompt, settings = self.sample_start()
        folder = path.parent / "sample-input"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / "start.png")
        entry = {"image": str(folder / "start.png"), "prompt": prompt, "len": "2s", **settings}
        job = resolve_job(self.preset, entry, {"name": path.stem}, path.parent)
        comps = dataclasses.replace(self.rt.components, transformer=model)
        with on_device(self.rt.device, comps.vae, comps.image_encoder):
            run_job(dataclasses.replace(self.rt, components=comps), job)


def probe_task(weights: Path, threads: int = 0, preset: str = "tiny") -> SectionTask:
    """A SectionTask over `weights` with one scene encoded (probes set `videos`), its
    transformer in eval mode: what the benchmarks that question a trained model start from."""
    from fpk.config import load_preset

    if threads:
        torch.set_num_threads(threads)
    p = load_preset(preset)
    task = SectionTask(p, load(p, weights), TrainConfig(scenes=1, seed=1))
    task.model.eval()
    return task


@torch.no_grad()
def encode_scene(
    comps, rt, seed: int, sections: int = MAX_SECTIONS, scene: world.Scene | None = None
) -> dict:
    """Latents of a world video long enough for `sections` sections, plus its conditions;
    the scene of `seed`, or `scene` where given.

    Of a goal scene only the first STATIC_AFTER frames are encoded: the world is still after
    that (the object has arrived), so later latent frames repeat the last one.
    """
    from fpk.model import conditioning as cond

    s = scene or world.scene(seed)
    window = rt.preset.sampling.window
    latent_frames = 1 + sections * window
    still = s.goal in world.GOALS
    frames = STATIC_AFTER if still else world_frame(latent_frames - 1) + 1
    pixels = cond.to_tensor(world.render(s, frames))  # (3, F, H, W)
    lat = cond.encode_latents(comps.vae, pixels)
    if lat.shape[1] < latent_frames:
        tail = lat[:, -1:].expand(-1, latent_frames - lat.shape[1], -1, -1)
        lat = torch.cat([lat, tail], dim=1)
    embeds = cond.image_embeds(comps, world.render_frame(s, 0), rt.device, rt.dtype)
    return {"latents": lat[:, :latent_frames].contiguous(), "prompt": s.prompt,
            "image_embeds": embeds, "scene": s}  # fmt: skip


def world_frame(latent: int) -> int:
    """The pixel frame a latent frame shows exactly (the tiny VAE's frame-wise encoder: latent
    t is the image latent of pixel frame 4t)."""
    return 4 * latent
