"""The section driver against diffusers' HunyuanVideoFramepackPipeline: same latents."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from fpk.bench.comparison import diffusers_pipeline, released_components
from fpk.run.jobs import resolve_job
from fpk.run.pipeline import sample_job

WINDOW, SECTIONS, STEPS = 3, 5, 3


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """Tiny random components on the released layout (the only one diffusers implements)."""
    folder = tmp_path_factory.mktemp("released")
    rt, image = released_components(folder)
    return rt, image


def _diffusers_latents(rt, image, job, sampling_type, prompt):
    from fpk.media.images import fit_image, open_image
    from fpk.model.conditioning import encode_latents, to_tensor

    pipe = diffusers_pipeline(rt)
    pixels = fit_image(open_image(image), rt.preset.sampling.resolution)
    anchor = encode_latents(rt.components.vae, to_tensor(pixels)[:, None])[None]
    # the same start latent (the posterior mean, as fpk uses), without drawing from the
    # generator, so that both pipelines draw the same section noise
    pipe.prepare_image_latents = lambda image, dtype=None, **kw: anchor.to(dtype)
    out = pipe(
        image=Image.fromarray(pixels),
        prompt_embeds=prompt.embeds,
        pooled_prompt_embeds=prompt.pooled,
        prompt_attention_mask=prompt.mask,
        height=64,
        width=64,
        num_frames=SECTIONS * ((WINDOW - 1) * 4 + 1),
        latent_window_size=WINDOW,
        num_inference_steps=STEPS,
        guidance_scale=job.guidance,
        generator=torch.Generator().manual_seed(job.seed),
        sampling_type=sampling_type,
        output_type="latent",
        return_dict=False,
    )[0]
    return out[-1][0]  # (C, T, h, w): start frame and every section, in time order


@pytest.mark.parametrize(
    "sampler, sampling_type", [("inverted", "inverted_anti_drifting"), ("forward", "vanilla")]
)
def test_latents_match_diffusers(released, tmp_path, sampler, sampling_type):
    rt, image = released
    preset = rt.preset
    frames = 1 + SECTIONS * WINDOW * 4  # exactly SECTIONS sections
    entry = {"image": str(image), "prompt": "a red circle moves", "len": f"{frames}f"}
    flags = {"sampler": sampler, "solver": "euler", "steps": STEPS, "window": WINDOW}
    job = resolve_job(preset, entry, {**flags, "seed": 7}, tmp_path)
    got = sample_job(rt, job).latents
    got = torch.stack([got[p] for p in sorted(got)], dim=1)
    want = _diffusers_latents(rt, image, job, sampling_type, rt.prompt(job.prompt))
    assert got.shape == want.shape == (16, 1 + SECTIONS * WINDOW, 16, 16)
    rel = ((got - want).abs().max() / want.abs().max()).item()
    assert rel < 1e-4, rel
    # the comparison can fail: another seed gives other latents
    other = sample_job(rt, resolve_job(preset, entry, {**flags, "seed": 8}, tmp_path))
    moved = torch.stack([other.latents[p] for p in sorted(other.latents)], dim=1)
    assert ((moved - want).abs().max() / want.abs().max()).item() > 1e-2
