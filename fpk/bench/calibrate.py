"""`fpk calibrate`: measure a preset's MagCache magnitude ratios on real sections.

Each job is generated once with no step skipped while every step's residual (the blocks'
output minus input) is compared with the last one's (fpk.model.caching.MagCalibration); the
ratio of each step index is averaged over every section and branch of every job and stored
for the preset (presets/calibration.json), where `--cache magcache` reads it. For `tiny`, the
jobs default to held-out scenes of the synthetic world.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from fpk import events as ev


def world_jobs(preset, folder: Path, scenes: int, length: str, steps: int) -> list:
    """Held-out world scenes as jobs (their start frames written into `folder`)."""
    from PIL import Image

    from fpk.run.jobs import resolve_job
    from fpk.synthetic import world

    jobs = []
    for i in range(scenes):
        s = world.scene(world.HELD_OUT + 100 + i)
        image = folder / f"start-{i}.png"
        Image.fromarray(world.render_frame(s, 0)).save(image)
        entry = {"image": str(image), "prompt": s.prompt, "len": length, "steps": steps}
        jobs.append(resolve_job(preset, entry, {"name": f"calibrate-{i}"}, folder))
    return jobs


def calibrate(rt, jobs: list, sink: ev.EventSink = ev.ignore) -> list[float]:
    """Mean MagCache ratio per step over every section of `jobs` (all with the same steps)."""
    from fpk.run.pipeline import sample_job

    model = rt.components.transformer
    model.__dict__["_fpk_calibrations"] = []
    with tempfile.TemporaryDirectory() as tmp:
        for job in jobs:
            sink(ev.Message(job.name, f"calibrating on {job.name}"))
            sample_job(rt, dataclasses.replace(job, cache="calibrate", out=Path(tmp)))
    runs = [s.ratios for s in model.__dict__.pop("_fpk_calibrations")]
    return [float(r) for r in np.mean(np.array(runs), axis=0)]
