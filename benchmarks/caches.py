"""Step caches on the tiny preset: transformer forwards saved, and what they cost in quality.

For each held-out scene of `benchmarks/heldout.py` (world seeds from 1,000,000), one video with
no cache and one with each `--cache` given; per cache: the forwards that ran the transformer's
blocks (fpk.model.caching.ForwardCounter) against the uncached run's, the PSNR of the decoded
video against the uncached one, and the wall time ratio (same process, alternating).

    .venv/bin/python benchmarks/caches.py --scenes 5 --seconds 4 \
        --cache teacache:0.15 magcache:0.06 fbcache:0.1

Prints one JSON line per cache and writes --out (JSON) when given.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fpk.config import load_preset
from fpk.media.video import read_video
from fpk.model.caching import ForwardCounter
from fpk.run.batch import load_runtime
from fpk.run.jobs import resolve_job
from fpk.run.pipeline import run_job
from fpk.synthetic import metrics, world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--cache", nargs="+", default=["teacache", "magcache", "fbcache:0.1"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rt = load_runtime(load_preset("tiny"), None, "cpu", "float32")
    rows: dict[str, list[dict]] = {c: [] for c in args.cache}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.scenes):
            scene = world.scene(world.HELD_OUT + i)
            image = Path(tmp) / f"start-{i}.png"
            Image.fromarray(world.render_frame(scene, 0)).save(image)

            def video(cache: str, i=i, scene=scene, image=image):
                entry = {"image": str(image), "prompt": scene.prompt, "steps": args.steps,
                         "len": f"{args.seconds}s", "cache": cache, "crf": 0}  # fmt: skip
                job = resolve_job(
                    rt.preset,
                    entry,
                    {"name": f"s{i}-{cache.replace(':', '-').replace('.', '_')}"},
                    Path(tmp),
                )
                counter = ForwardCounter(rt.components.transformer)
                t0 = time.perf_counter()
                frames, _, _ = read_video(run_job(rt, job))
                counter.close()
                return frames, counter.computed, time.perf_counter() - t0

            base, base_forwards, base_s = video("none")
            for cache in args.cache:
                frames, forwards, seconds = video(cache)
                rows[cache].append({"forwards": forwards, "base_forwards": base_forwards,
                                    "psnr": metrics.psnr(frames, base),
                                    "seconds": seconds, "base_seconds": base_s})  # fmt: skip
    report = {}
    for cache, r in rows.items():
        report[cache] = {
            "forwards": int(np.sum([x["forwards"] for x in r])),
            "base_forwards": int(np.sum([x["base_forwards"] for x in r])),
            "fewer_forwards": round(
                float(np.sum([x["base_forwards"] for x in r]) / np.sum([x["forwards"] for x in r])),
                2,
            ),
            "psnr_vs_uncached_db": round(float(np.mean([x["psnr"] for x in r])), 2),
            "min_psnr_db": round(float(np.min([x["psnr"] for x in r])), 2),
            "wall_ratio": round(
                float(np.sum([x["seconds"] for x in r]) / np.sum([x["base_seconds"] for x in r])),
                2,
            ),
        }
        print(json.dumps({"cache": cache, **report[cache]}), flush=True)
    if args.out:
        meta = {"scenes": args.scenes, "seconds": args.seconds, "steps": args.steps}
        args.out.write_text(json.dumps({**meta, "caches": report}, indent=1))


if __name__ == "__main__":
    main()
