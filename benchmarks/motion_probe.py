"""Has the transformer learnt the world's motion? Each section of a held-out world video is
sampled with the true history as its context (teacher forcing: the context training gives
it, no error carried from earlier sections), and the object's position in each generated
latent frame is compared with the world's.

Every latent frame of the tiny VAE's frame-wise encoder is the image latent of pixel frame 4t
(`fpk.train.sections.world_frame`), so each generated latent frame is decoded alone, as an
image, and scored against that pixel frame. What generation adds on top (its own history,
the order's drift) is what `fpk benchmark --part quality` measures; this probe asks the
question before it: given the truth so far, does the model continue the motion?

    .venv/bin/python benchmarks/motion_probe.py --scenes 10 --order vanilla
    .venv/bin/python benchmarks/motion_probe.py --scenes 10 --kind goal --weights DIR

Prints a JSON line per scene and a summary (mean position error per section of the order's
plan and per latent frame ahead of the known history); `--out FILE` writes the report.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from fpk.media import decoding
from fpk.model.call import target_tokens
from fpk.model.loading import EMBEDDED_DIR
from fpk.sampling.orders import ORDERS, plan_sections
from fpk.sampling.sigmas import flow_sigmas
from fpk.sampling.solvers import sample
from fpk.synthetic import metrics, world
from fpk.train import sections as tr
from fpk.train.config import TrainConfig

SECTIONS = tr.MAX_SECTIONS  # 6 sections: about 4 s of the tiny preset
KINDS = {"continuous": world.continuous_scene, "goal": world.scene}


def probe_scene(task, scene: world.Scene, order: str, steps: int, seed: int) -> list[list[dict]]:
    """Per section of `order`'s plan (in the order it is generated), per target latent frame:
    the position error and solidity of the generated frame against the world's."""
    comps, model = task.comps, task.model
    _, padding = TrainConfig(sampler=order).order_padding()  # the padding training uses
    video = tr.encode_scene(comps, task.rt, 0, SECTIONS, scene=scene)
    plan = plan_sections(order, SECTIONS, task.window, padding)
    out = []
    for k, step in enumerate(plan):
        item = task.section(video, plan, step, padding)  # the true history (no context noise)
        target = item[3]
        noise = torch.randn((1, *target.shape), generator=torch.Generator().manual_seed(seed + k))
        sigmas = flow_sigmas(steps, target_tokens(model.config, target[None]))
        with torch.no_grad():
            flow = lambda x, s, item=item: task.flow(model, [item], x, s, [scene.prompt])  # noqa: E731
            gen = sample(flow, noise, sigmas)
        rows = []
        for j, t in enumerate(step.target):
            frame = decoding.to_uint8(decoding.decode_latents(comps.vae, gen[0][:, j : j + 1]))
            score = metrics.score_frame(frame[-1], scene, tr.world_frame(t))
            rows.append({"latent": t, "error": score.position_error, "solid": score.solid})
        out.append(rows)
    return out


def summarize(per_scene: list[list[list[dict]]]) -> dict:
    """Mean position error (px) and solid share per section and per latent frame ahead."""
    by_section: dict[int, list[dict]] = {}
    by_ahead: dict[int, list[dict]] = {}
    for sections in per_scene:
        for k, rows in enumerate(sections):
            by_section.setdefault(k, []).extend(rows)
            for j, row in enumerate(rows):
                by_ahead.setdefault(j + 1, []).append(row)

    def stats(rows: list[dict]) -> dict:
        return {"error": round(float(np.mean([r["error"] for r in rows])), 2),
                "solid": round(float(np.mean([r["solid"] for r in rows])), 2)}  # fmt: skip

    every = [r for rows in by_section.values() for r in rows]
    return {"error": stats(every)["error"], "solid": stats(every)["solid"],
            "by_section": {k: stats(v) for k, v in by_section.items()},
            "by_frame_ahead": {j: stats(v) for j, v in by_ahead.items()}}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, default=EMBEDDED_DIR / "tiny")
    p.add_argument("--scenes", type=int, default=10)
    p.add_argument("--kind", choices=sorted(KINDS), default="continuous")
    p.add_argument("--order", choices=ORDERS, default="vanilla")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    task = tr.probe_task(args.weights, args.threads)
    per_scene = []
    for i in range(args.scenes):
        scene = KINDS[args.kind](world.HELD_OUT + i)
        per_scene.append(probe_scene(task, scene, args.order, args.steps, seed=100 * i))
        errors = [round(float(np.mean([r["error"] for r in rows])), 1) for rows in per_scene[-1]]
        print(json.dumps({"scene": i, "prompt": scene.prompt, "error_by_section": errors}))
    report = {"weights": str(args.weights), "kind": args.kind, "order": args.order,
              "scenes": args.scenes, "steps": args.steps, **summarize(per_scene)}  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
