"""A job's outputs: the mp4 (latents decoded in time order, streamed to the encoder) and its
sidecar JSON (resolved settings, weights, versions, per-section timings), each written under a
temporary name and renamed into place, so nothing half-written is ever at a final path.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fpk import events as ev
from fpk.config import Resolution
from fpk.media import decoding
from fpk.media.decoding import stream_frames
from fpk.media.video import VideoWriter, publishing
from fpk.run.jobs import JobSpec
from fpk.run.runtime import Runtime
from fpk.sampling.timeline import SectionGrid


def video_tags(job: JobSpec, comment: str) -> dict[str, str]:
    """The mp4's metadata tags: the prompt (where there is one) and seed, and a comment naming
    what made it (for fpk extend: the source clip)."""
    prompt = {"description": job.prompt, "fpk_prompt": job.prompt} if job.prompt else {}
    source = {"fpk_source": job.video.name} if job.video is not None else {}
    return {**prompt, "comment": comment, "fpk_seed": str(job.seed), **source}


def write_video(
    rt: Runtime, job: JobSpec, latents: dict[int, torch.Tensor], sgrid: SectionGrid, sink
) -> Path:
    """Decode `latents` (position -> (C, h, w)) in overlapping chunks into `job.output`."""
    vae = rt.components.vae
    frames = [latents[p] for p in range(sgrid.latent_frames)]

    def decode(start: int, stop: int) -> torch.Tensor:
        return decoding.decode_latents(vae, torch.stack(frames[start:stop], dim=1))

    spatial = vae.config.spatial_compression_ratio
    h, w = frames[0].shape[-2] * spatial, frames[0].shape[-1] * spatial
    tags = video_tags(job, f"fpk {job.name}: preset {job.preset}, seed {job.seed}")
    span = decoding.decode_span(vae, h, w, job.window, job.window, sgrid.temporal)
    written = 0
    with VideoWriter(job.output, job.fps, w, h, job.crf, tags) as writer:
        for chunk in stream_frames(decode, sgrid.latent_frames, job.window, job.window,
                                   job.frames, sgrid.temporal, span):  # fmt: skip
            writer.write(decoding.to_uint8(chunk))
            written += chunk.shape[1]
            sink(ev.FramesWritten(job.name, written, job.frames))
    return job.output


def write_sidecar(
    rt: Runtime,
    job: JobSpec,
    size: Resolution,
    sgrid: SectionGrid,
    timings: list[float],
    seconds: float,
    extra: dict | None = None,
) -> None:
    """`job.sidecar`: what made the video, for reruns (settings hash) and for people."""
    data = {
        "fpk_sidecar": 1,
        "settings_hash": job.settings_hash,
        "job": {**job.as_dict(), "resolution": str(size)},  # as run, not only as asked
        "resolution": str(size),
        "frames": job.frames,
        "sections": sgrid.sections,
        "generated_frames": sgrid.generated_frames,
        "layout": rt.schedule.name,
        "weights": rt.components.sources,
        "versions": _versions(),
        "device": str(rt.device),
        "dtype": str(rt.dtype).removeprefix("torch."),
        "section_seconds": timings,
        "seconds": round(seconds, 3),
        **(extra or {}),
    }
    with publishing(job.sidecar) as tmp:  # renamed into place when whole
        tmp.write_text(json.dumps(data, indent=2))


def _versions() -> dict[str, str]:
    import diffusers
    import transformers

    import fpk

    return {
        "fpk": fpk.__version__,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }
