"""One held-out world job sampled in-process, its latents stacked: what the tests that compare
placements, kernels and caches against each other run."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from PIL import Image


def world_job_latents(rt, scene_seed: int, **settings) -> torch.Tensor:
    """Latents (T, C, h, w) of world scene `scene_seed` through `sample_job` on `rt`, with
    the job `settings` (len, steps, cache, ...)."""
    from fpk.run.jobs import resolve_job
    from fpk.run.pipeline import sample_job
    from fpk.synthetic import world

    s = world.scene(scene_seed)
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "s.png"
        Image.fromarray(world.render_frame(s, 0)).save(image)
        entry = {"image": str(image), "prompt": s.prompt, **settings}
        latents = sample_job(rt, resolve_job(rt.preset, entry, {"name": "t"}, Path(tmp))).latents
    return torch.stack([latents[k] for k in sorted(latents)])  # position -> (C, h, w), in order
