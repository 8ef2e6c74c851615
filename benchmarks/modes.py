"""The tiny model's other modes on held-out world scenes: text-to-video and backward extension.

- text-to-video: `fpk generate --prompt P --len 3s` for the prompts of N held-out scenes (world
  seeds from 1,000,000: goal scenes, then as many continuous-motion ones); it passes where the
  named object is present (one solid shape of the named colour: fpk.synthetic.metrics) in
  most frames of the first second and of the last;
- backward extension: a 2 s clip of the world's own frames of each held-out scene, then
  `fpk extend CLIP --len 2s --reverse` with the scene's prompt; it passes where the object is
  solid in most frames of every second of the output (new part and clip).
Each also reports the largest per-frame jump of the object's centre (metrics.largest_jump).

    .venv/bin/python benchmarks/modes.py --scenes 20 --out bench/modes
    .venv/bin/python benchmarks/modes.py --scenes 20 --weights /path/to/tiny --out bench/m2

Writes OUT/report.json and prints its summary.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from fpk import events as ev
from fpk.config import load_preset
from fpk.media.video import VideoWriter, read_video
from fpk.run.batch import load_runtime, run_any
from fpk.run.jobs import resolve_job
from fpk.synthetic import metrics, world

SOLID = 0.5  # share of a second's frames in which the object must be solid


def held_out(n: int) -> list[world.Scene]:
    """n held-out scenes: the first half goal scenes, the rest continuous-motion ones."""
    half = (n + 1) // 2
    return [world.scene(world.HELD_OUT + i) for i in range(half)] + [
        world.continuous_scene(world.HELD_OUT + i) for i in range(n - half)
    ]


def solid_seconds(frames: np.ndarray, scene: world.Scene) -> list[float]:
    """Per second, the share of frames in which the object is one solid piece of its colour
    (position not asked for)."""
    return [s["solid"] for s in metrics.per_second(frames, scene)]


def text_to_video(rt, scenes: list[world.Scene], out: Path, steps: int) -> list[dict]:
    rows = []
    for i, s in enumerate(scenes):
        job = resolve_job(rt.preset, {"prompt": s.prompt, "len": "3s"},
                          {"steps": steps, "name": f"t2v-{i}", "seed": i}, out)  # fmt: skip
        frames, _, _ = read_video(run_any(rt, job, ev.SILENT))
        solid = solid_seconds(frames, s)
        rows.append({"prompt": s.prompt, "solid_per_second": solid,
                     "passes": solid[0] >= SOLID and solid[-1] >= SOLID,
                     "largest_jump": metrics.largest_jump(frames, s)})  # fmt: skip
        print(json.dumps({"mode": "text-to-video", **rows[-1]}), flush=True)
    return rows


def reverse(rt, scenes: list[world.Scene], out: Path, steps: int) -> list[dict]:
    rows = []
    fps = rt.preset.sampling.fps
    for i, s in enumerate(scenes):
        clip = out / f"clip-{i}.mp4"
        with VideoWriter(clip, fps, world.SIZE, world.SIZE) as writer:
            writer.write(world.render(s, 2 * fps))
        job = resolve_job(rt.preset, {"video": str(clip), "prompt": s.prompt, "len": "2s",
                                      "reverse": True},
                          {"steps": steps, "name": f"rev-{i}", "seed": i}, out)  # fmt: skip
        frames, _, _ = read_video(run_any(rt, job, ev.SILENT))
        solid = solid_seconds(frames, s)
        rows.append({"prompt": s.prompt, "solid_per_second": solid,
                     "passes": min(solid) >= SOLID,
                     "largest_jump": metrics.largest_jump(frames, s)})  # fmt: skip
        print(json.dumps({"mode": "reverse", **rows[-1]}), flush=True)
    return rows


def summary(rows: list[dict]) -> dict:
    jumps = [r["largest_jump"] for r in rows]
    return {"passes": sum(r["passes"] for r in rows), "of": len(rows),
            "largest_jump_max": round(max(jumps), 2),
            "largest_jump_median": round(float(np.median(jumps)), 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--modes", nargs="+", default=["text-to-video", "reverse"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rt = load_runtime(load_preset("tiny"), args.weights, "cpu", "float32")
    args.out.mkdir(parents=True, exist_ok=True)
    scenes = held_out(args.scenes)
    t0 = time.perf_counter()
    report: dict = {"weights": str(args.weights or "embedded"), "steps": args.steps}
    for mode, fn in (("text-to-video", text_to_video), ("reverse", reverse)):
        if mode in args.modes:
            rows = fn(rt, scenes, args.out, args.steps)
            report[mode] = {"summary": summary(rows), "rows": rows}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v["summary"] if isinstance(v, dict) else v for k, v in report.items()}))


if __name__ == "__main__":
    main()
