"""Does the tiny transformer put the object where the prompt says? For held-out starts, the
section the inverted order generates first (the end of the video, from the start image alone,
released padding) is sampled with each of the five goals in the prompt; the object's position
in its last frame is compared with the goal the prompt names.

    .venv/bin/python benchmarks/goal_probe.py --weights fpk/weights/tiny --scenes 8
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from fpk.media import decoding
from fpk.model.call import target_tokens
from fpk.model.loading import EMBEDDED_DIR
from fpk.sampling.sigmas import flow_sigmas
from fpk.sampling.solvers import sample
from fpk.synthetic import metrics, world
from fpk.train import sections as tr

SECTIONS = 6  # the first section of any video of 4 sections or more: padding 3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, default=EMBEDDED_DIR / "tiny")
    p.add_argument("--scenes", type=int, default=8)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    task = tr.probe_task(args.weights, args.threads)
    comps, model = task.comps, task.model
    hits, rows = 0, []
    for i in range(args.scenes):
        base = world.scene(world.HELD_OUT + i)
        for goal in world.GOALS:
            s = dataclasses.replace(base, goal=goal)
            task.videos = [tr.encode_scene(comps, task.rt, 0, SECTIONS, scene=s)]
            item = task.sample_one(first=True, sections=SECTIONS)
            x0 = item[3][None]
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(i))
            sig = flow_sigmas(args.steps, target_tokens(model.config, x0))
            with torch.no_grad():
                out = sample(
                    lambda x, sigma, item=item, text=s.prompt: task.flow(
                        model, [item], x, sigma, [text]
                    ),
                    noise,
                    sig,
                )
                frames = decoding.to_uint8(decoding.decode_latents(comps.vae, out[0]))
            score = metrics.score_frame(frames[-1], s, 10_000)
            ok = score.position_error < metrics.AT_GOAL_PX and score.solid
            hits += ok
            rows.append({"scene": i, "goal": goal, "error_px": round(score.position_error, 1)})
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"at_goal": hits, "of": len(rows)}))


if __name__ == "__main__":
    main()
