"""The section driver: one job from conditions to an mp4, section by section.

Steps (diffusers' FramePack pipeline numbers them; here each is a function):
1. conditions: the start image (or a start frame sampled from text alone), the end image,
   prompt encodings per section (cached across jobs);
2. the section plan of the sampling order (fpk.sampling.orders) over the section grid
   (fpk.sampling.timeline);
3. for each section: pack its context (fpk.model.context), denoise (fpk.sampling.solvers),
   store its latents on disk (a rerun resumes from them);
4. decode in time order with overlapping chunks and stream frames to the mp4 (fpk.media.decoding);
5. the sidecar JSON with the resolved settings, versions and per-section timings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fpk import events as ev
from fpk.config import Resolution
from fpk.media import decoding, images
from fpk.model import conditioning as cond
from fpk.model.caching import SectionCache, parse_cache
from fpk.model.call import (
    SectionInputs,
    blank_image_embeds,
    latent_channels,
    predict_flow,
    section_inputs,
    target_tokens,
    tokens_per_frame,
)
from fpk.model.context import context_tokens, model_shift, section_context
from fpk.model.packing import LatentGrid
from fpk.run.jobs import JobSpec
from fpk.run.output import write_sidecar, write_video
from fpk.run.preview import Preview
from fpk.run.runtime import Runtime
from fpk.run.store import SectionStore, job_store
from fpk.sampling.orders import SectionStep, plan_sections
from fpk.sampling.prompts import parse_prompt, section_prompts
from fpk.sampling.sigmas import flow_sigmas
from fpk.sampling.solvers import Cancelled, sample
from fpk.sampling.timeline import SectionGrid, section_grid


@dataclass
class Conditions:
    anchor: torch.Tensor  # (C, h, w) latent of the start frame
    image_embeds: torch.Tensor  # (1, N, D)
    end_latent: torch.Tensor | None
    start_pixels: np.ndarray  # (H, W, 3) uint8, as fitted


@dataclass
class SectionCall:
    """One section's transformer inputs (and the negative prompt's, for real CFG)."""

    step: SectionStep
    inputs: SectionInputs
    negative: SectionInputs | None


def job_size(rt: Runtime, job: JobSpec) -> Resolution:
    """Output size: --resolution, else the preset's bucket nearest the image's aspect."""
    if job.resolution:
        return job.resolution
    base, multiple = rt.preset.sampling.resolution, rt.preset.resolution_multiple
    if job.image is None:
        return base
    img = images.open_image(job.image)
    return images.nearest_bucket(img.width, img.height, base, multiple)


# --- 1. conditions -----------------------------------------------------------------------


def image_conditions(rt: Runtime, job: JobSpec, image: Path, size: Resolution) -> Conditions:
    """The start image's latent and SigLIP features (blended with the end image's, if any)."""
    comps = rt.components
    pixels = images.fit_image(images.open_image(image), size)
    anchor = cond.encode_latents(comps.vae, cond.to_tensor(pixels)[:, None])[:, 0]
    embeds = cond.image_embeds(comps, pixels, rt.device, rt.dtype)
    end = None
    if job.end_image is not None:
        end_pixels = images.fit_image(images.open_image(job.end_image, "--end-image"), size)
        end = cond.encode_latents(comps.vae, cond.to_tensor(end_pixels)[:, None])[:, 0]
        end_embeds = cond.image_embeds(comps, end_pixels, rt.device, rt.dtype)
        embeds = embeds + job.end_strength * (end_embeds - embeds) / 2  # diffusers: the mean
    return Conditions(anchor, embeds, end, pixels)


def text_conditions(rt: Runtime, job: JobSpec, grid: LatentGrid, size: Resolution) -> Conditions:
    """Text-to-video: the start frame is a one-frame section sampled from the prompt alone
    (no context, blank image features), then decoded and used as the start image."""
    comps = rt.components
    first = parse_prompt(job.prompt)[0].text
    step = SectionStep(0, -1, range(0, 1), 0, ())
    blank = blank_image_embeds(comps, rt.dtype)
    inputs = section_inputs([rt.prompt(first)], blank, torch.zeros(1, 1, dtype=torch.long), [[]],
                            job.guidance)  # fmt: skip
    call = SectionCall(step, inputs, None)
    gen = torch.Generator().manual_seed(job.seed + 1)  # its own stream: sections keep theirs
    noise = torch.randn(1, latent_channels(comps), 1, grid.height, grid.width, generator=gen)
    latent = denoise(rt, job, call, noise, lambda i, n: None, None)[0, :, 0]
    pixels = decoding.to_uint8(decoding.decode_latents(comps.vae, latent[:, None]))[0]
    return Conditions(latent, cond.image_embeds(comps, pixels, rt.device, rt.dtype), None, pixels)


def prompts_per_section(rt: Runtime, job: JobSpec, grid: SectionGrid) -> list[cond.PromptEmbeds]:
    """Prompt encodings of each section on the timeline (timestamped prompts, blended)."""
    seconds = [s * grid.window * grid.temporal / job.fps for s in range(grid.sections)]
    mixes = section_prompts(parse_prompt(job.prompt), seconds, job.prompt_blend)
    return [cond.PromptEmbeds.mix([(rt.prompt(t), w) for t, w in mix]) for mix in mixes]


# --- 3. one section ----------------------------------------------------------------------


def denoise(
    rt: Runtime,
    job: JobSpec,
    call: SectionCall,
    noise: torch.Tensor,
    on_step: Callable[[int, int], None],
    should_stop: Callable[[], bool] | None,
) -> torch.Tensor:
    """Latents (1, C, S, h, w) of one section from `noise`, by the job's solver."""
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

    model = rt.components.transformer
    inputs = call.inputs.to(rt.device, rt.dtype)
    negative = call.negative.to(rt.device, rt.dtype) if call.negative is not None else None

    cache = SectionCache(model, parse_cache(job.cache), job.steps, rt.preset.name)

    def flow(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        with cache.branch("prompt"):
            pred = predict_flow(model, x, sigma, inputs).float()
        if negative is None:
            return pred
        with cache.branch("negative"):
            neg = predict_flow(model, x, sigma, negative).float()
        out = neg + job.cfg * (pred - neg)
        return rescale_noise_cfg(out, pred, job.guidance_rescale) if job.guidance_rescale else out

    sigmas = flow_sigmas(job.steps, target_tokens(model.config, noise))
    with torch.no_grad():
        return sample(flow, noise.to(rt.device), sigmas, job.solver, on_step, should_stop)


# --- the job -----------------------------------------------------------------------------


@dataclass
class Sampled:
    """A job's latents on the true timeline (0 = start frame) and how they were made."""

    latents: dict[int, torch.Tensor]  # position -> (C, h, w)
    size: Resolution
    grid: SectionGrid
    timings: list[float]
    store: SectionStore


def sample_job(
    rt: Runtime,
    job: JobSpec,
    progress: ev.Progress = ev.SILENT,
    source: dict[int, torch.Tensor] | None = None,
    plan: tuple[SectionStep, ...] | None = None,
    conds: Conditions | None = None,
    size: Resolution | None = None,
) -> Sampled:
    """Steps 1 to 3: every section's latents, resumed from disk where already finished.

    fpk extend passes its own `plan`, the clip's latents as `source` (known frames on the
    timeline) and `conds` (the anchor it chose).
    """
    size = size or job_size(rt, job)
    grid = rt.preset.latent_grid(size)
    sgrid = section_grid(job.frames, job.window, rt.temporal)
    plan = plan or plan_sections(job.sampler, sgrid.sections, job.window, job.padding)
    store = job_store(job)
    done = _keys([s for s in plan if store.path(_key(s)).is_file()])
    sink = progress.sink
    sink(ev.JobStarted(job.name, progress.index, progress.total, job.frames, sgrid.sections,
                       job.steps, job.sampler, len(done), job.padding))  # fmt: skip
    _warn_if_unfamiliar(rt, job, sink)
    conds = conds or _conditions(rt, job, grid, size, store)
    prompts = prompts_per_section(rt, job, sgrid)
    negative = rt.prompt(job.negative_prompt) if job.cfg > 1 else None
    latents = {0: conds.anchor, **(source or {})}
    timings = []
    gen = torch.Generator().manual_seed(job.seed)
    channels = latent_channels(rt.components)
    preview = Preview(rt.components.vae, store.folder, sgrid.latent_frames)
    for step in plan:
        noise = torch.randn(1, channels, job.window, grid.height, grid.width, generator=gen)
        t1 = time.perf_counter()
        out = store.load(_key(step))
        if out is None:
            call = _section_call(rt, job, step, grid, latents, conds, prompts, negative)
            sink(_section_event(rt, job, step, call, grid, sgrid.sections))

            def on_step(i: int, n: int, step: SectionStep = step) -> None:
                sink(ev.StepDone(job.name, step.order, step.section, i, n))

            out = denoise(rt, job, call, noise, on_step, progress.should_stop)[0]
            out = out.float().cpu()
            store.save(_key(step), out)
        latents.update({p: out[:, i] for i, p in enumerate(step.target)})
        timings.append(round(time.perf_counter() - t1, 4))
        if progress.preview:
            preview.update(latents)
        sink(ev.SectionDone(job.name, step.order, step.section, timings[-1], _key(step) in done))
    return Sampled(latents, size, sgrid, timings, store)


def run_job(rt: Runtime, job: JobSpec, progress: ev.Progress = ev.SILENT) -> Path:
    """Generate `job`'s video; returns the mp4 path. Raises Cancelled when stopped."""
    t0 = time.perf_counter()
    s = sample_job(rt, job, progress)
    path = write_video(rt, job, s.latents, s.grid, progress.sink)
    write_sidecar(rt, job, s.size, s.grid, s.timings, time.perf_counter() - t0)
    s.store.remove()
    seconds = round(time.perf_counter() - t0, 3)
    progress.sink(ev.JobDone(job.name, str(path), job.frames, seconds, str(s.size),
                             str(job.sidecar)))  # fmt: skip
    return path


def _key(step: SectionStep) -> str:
    return f"section_{step.section:04d}"


def _keys(steps: list[SectionStep]) -> set[str]:
    return {_key(s) for s in steps}


FAMILIAR_SHARE = 0.9  # of an image's pixels in the synthetic world's colours (tiny preset)


def _warn_if_unfamiliar(rt: Runtime, job: JobSpec, sink: ev.EventSink) -> None:
    """One warning line where the model was trained on fpk's synthetic world only and an input
    image is unlike it, so that a photo's collapse is not taken for a bug."""
    if rt.preset.weights.domain != "fpk-world":
        return
    from fpk.synthetic.world import palette_share

    for flag, path in (("--image", job.image), ("--end-image", job.end_image)):
        if (
            path is not None
            and palette_share(np.asarray(images.open_image(path, flag))) < FAMILIAR_SHARE
        ):
            sink(ev.Message(job.name, (
                f"warning: {flag} {path.name} is unlike anything the '{rt.preset.name}' model "
                "knows (fpk's synthetic world: one solid square or circle on a flat or "
                "checkered background, like examples/start.png); expect a poor video"
            )))  # fmt: skip


def _conditions(
    rt: Runtime, job: JobSpec, grid: LatentGrid, size: Resolution, store: SectionStore
) -> Conditions:
    """Image conditions, or text-to-video's sampled start frame (kept for resumption)."""
    if job.image is not None:
        return image_conditions(rt, job, job.image, size)
    saved = store.load("start")
    if saved is None:
        conds = text_conditions(rt, job, grid, size)
        store.save("start", conds.anchor)
        return conds
    pixels = decoding.to_uint8(decoding.decode_latents(rt.components.vae, saved[:, None]))[0]
    embeds = cond.image_embeds(rt.components, pixels, rt.device, rt.dtype)
    return Conditions(saved, embeds, None, pixels)


def _section_call(rt, job, step, grid, latents, conds, prompts, negative) -> SectionCall:
    shift = model_shift(step, rt.schedule, job.padding)
    context = section_context(
        step, rt.schedule, grid, latents, shift, conds.anchor, conds.end_latent, job.end_strength
    )
    positions = torch.tensor([list(step.target)]) + shift

    def inputs(prompt: cond.PromptEmbeds) -> SectionInputs:
        return section_inputs([prompt], conds.image_embeds, positions, [context], job.guidance)

    neg = inputs(negative) if negative is not None else None
    return SectionCall(step, inputs(prompts[step.section]), neg)


def _section_event(rt, job, step, call, grid, sections) -> ev.SectionStarted:
    counts = context_tokens(call.inputs.context[0], grid)
    counts[-1] = ("anchor", counts[-1][1])  # the start frame always closes the context
    per_frame = tokens_per_frame(rt.components.transformer.config, grid.height, grid.width)
    positions = call.inputs.positions
    return ev.SectionStarted(
        job.name,
        step.order,
        step.section,
        sections,
        (int(positions[0, 0]), int(positions[0, -1])),
        tuple(counts),
        sum(c for _, c in counts),
        job.window * per_frame,
    )


__all__ = ["Cancelled", "Runtime", "run_job"]
