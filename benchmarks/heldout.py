"""The tiny model on held-out world scenes, inverted order: the model card's figures.

For each of N held-out starts (world seeds from 1,000,000 on, never trained on) it generates a
video of the given length and scores it against the world's ground truth:
- present: the object is one solid shape of its colour in most frames of the last second;
- at goal: its mean position error over the last second is under 4 px;
- first-second PSNR, and per-second PSNR / position error for the card's table;
- the largest per-frame jump of the object's centre (fpk.synthetic.metrics.largest_jump).

    .venv/bin/python benchmarks/heldout.py --seconds 5 --scenes 20
    .venv/bin/python benchmarks/heldout.py --seconds 60 --scenes 20 --steps 10

Split across processes with --first/--scenes and --rows FILE (full rows, JSONL); then
`--summarize FILE ...` gives the summary of all of them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fpk.config import load_preset
from fpk.media.video import read_video
from fpk.run.batch import load_runtime
from fpk.run.jobs import resolve_job
from fpk.run.pipeline import run_job
from fpk.synthetic import metrics, world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--first", type=int, default=0, help="First held-out index (resume).")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--padding", default="released")
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--rows", type=Path, default=None, help="Append full rows here.")
    parser.add_argument("--summarize", type=Path, nargs="+", default=None,
                        help="Only summarise the rows in these files.")  # fmt: skip
    args = parser.parse_args()
    if args.summarize:
        rows = [json.loads(line) for f in args.summarize for line in f.read_text().splitlines()]
        print(json.dumps(summarize(rows, wall=None)))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    rt = load_runtime(load_preset("tiny"), args.weights, "cpu", "float32")
    rows, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.first, args.first + args.scenes):
            scene = world.scene(world.HELD_OUT + i)
            image = Path(tmp) / f"start-{i}.png"
            Image.fromarray(world.render_frame(scene, 0)).save(image)
            job = resolve_job(
                rt.preset,
                {"image": str(image), "prompt": scene.prompt, "len": f"{args.seconds}s"},
                {"steps": args.steps, "padding": args.padding, "name": f"h{i}"},
                args.out or Path(tmp),
            )
            frames, _, _ = read_video(run_job(rt, job))
            per_sec = metrics.per_second(frames, scene)
            rows.append({
                "seed": world.HELD_OUT + i, "prompt": scene.prompt, "steps": args.steps,
                "padding": args.padding, **metrics.end_state(per_sec),
                "first_second_psnr": per_sec[0]["psnr"],
                "largest_jump": metrics.largest_jump(frames, scene),
                "per_second": per_sec,
            })  # fmt: skip
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "per_second"}), flush=True)
            if args.rows:
                with args.rows.open("a") as f:
                    f.write(json.dumps(rows[-1]) + "\n")
    print(json.dumps(summarize(rows, wall=time.perf_counter() - t0)))


def summarize(rows: list[dict], wall: float | None) -> dict:
    n = min(len(r["per_second"]) for r in rows)
    return {
        "seconds": n, "scenes": len(rows), "steps": sorted({r["steps"] for r in rows}),
        "padding": sorted({r["padding"] for r in rows}),
        "present": sum(r["present"] for r in rows),
        "at_goal": sum(r["at_goal"] for r in rows),
        "first_second_psnr": round(float(np.mean([r["first_second_psnr"] for r in rows])), 2),
        "psnr_per_second": [round(float(np.mean([r["per_second"][s]["psnr"] for r in rows])), 2)
                            for s in range(n)],
        "position_error_per_second": [
            round(float(np.mean([r["per_second"][s]["position_error"] for r in rows])), 2)
            for s in range(n)],
        "largest_jump_max": round(max(r.get("largest_jump", 0.0) for r in rows), 2),
        "largest_jump_median": round(float(np.median([r.get("largest_jump", 0.0)
                                                      for r in rows])), 2),
        "wall_seconds": None if wall is None else round(wall, 1),
    }  # fmt: skip


if __name__ == "__main__":
    main()
