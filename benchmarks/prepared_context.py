"""One denoising step of a tiny-model section with its context prepared once (what
fpk.model.call does) against preparing it at every step (as before), alternating step by step
in one process; the section is a late inverted section of a 60 s video (full packed context).

    .venv/bin/python benchmarks/prepared_context.py --steps 40
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fpk.config import load_preset
from fpk.model import call
from fpk.model.context import model_shift, section_context
from fpk.run.batch import load_runtime
from fpk.sampling.orders import known_frames, plan_sections
from fpk.sampling.timeline import section_grid


def section_inputs(rt):
    """A section with every context level filled: inverted order, a 60 s video's 5th."""
    p = rt.preset
    window, grid = p.sampling.window, p.latent_grid()
    sgrid = section_grid(1800, window, rt.temporal)
    plan = plan_sections("inverted", sgrid.sections, window, "released")
    step = plan[4]
    channels = rt.components.transformer.config.in_channels
    shape = (channels, grid.height, grid.width)
    latents = {i: torch.randn(shape) for i in range(sgrid.latent_frames)}
    known = {i: latents[i] for i in known_frames(plan, step.order)}
    shift = model_shift(step, rt.schedule, "released")
    ctx = section_context(step, rt.schedule, grid, known, shift, latents[0])
    prompt = rt.prompt("the red circle on a black background moves to the top right corner")
    image = call.blank_image_embeds(rt.components)
    positions = torch.tensor([list(step.target)]) + shift
    inputs = call.section_inputs([prompt], image, positions, [ctx], 10.0)
    x = torch.randn(1, latents[0].shape[0], window, grid.height, grid.width)
    return inputs, x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rt = load_runtime(load_preset("tiny"), None, "cpu", "float32")
    model = rt.components.transformer.eval()
    inputs, x = section_inputs(rt)
    sigma = torch.tensor([0.5], dtype=torch.float64)
    prepared = call._prepared
    times: dict[str, list[float]] = {"every step": [], "once": []}
    with torch.no_grad():
        for _ in range(args.steps):
            for mode in times:
                call._prepared = prepared if mode == "once" else (lambda *a: None)
                t0 = time.perf_counter()
                call.predict_flow(model, x, sigma, inputs)
                times[mode].append(time.perf_counter() - t0)
    call._prepared = prepared
    med = {m: statistics.median(v) for m, v in times.items()}
    for m, v in med.items():
        print(f"context prepared {m}: {v * 1000:.2f} ms/step (median of {args.steps})")
    print(f"ratio once / every step: {med['once'] / med['every step']:.3f}")


if __name__ == "__main__":
    main()
