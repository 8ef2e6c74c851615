"""Wall time of one tiny manifest on a local Ray cluster: 1 worker against 2, in one session.

The same 6-job manifest (world starts the model knows, embedded tiny weights) runs on 1 and
on 2 Ray workers (one CPU and one torch thread each), alternately `--repeats` times into
fresh folders; the report is each configuration's median wall time and their ratio.

    .venv/bin/python benchmarks/ray_scaling.py --repeats 2 --out bench/ray.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image

from fpk.config import load_preset
from fpk.run import batch
from fpk.run.distributed import RaySpec
from fpk.synthetic import world

JOBS = 6


def entries(folder: Path, length: str, steps: int) -> list[dict]:
    out = []
    for k in range(JOBS):
        scene = world.scene(world.HELD_OUT + k)
        image = folder / f"start{k}.png"
        Image.fromarray(world.render_frame(scene, 0)).save(image)
        out.append({"name": f"j{k}", "image": str(image), "prompt": scene.prompt,
                    "len": length, "seed": k, "steps": steps})  # fmt: skip
    return out


def timed(jobs: list[dict], workers: int, folder: Path) -> float:
    t0 = time.perf_counter()
    outcomes = batch.generate(load_preset("tiny"), jobs, {}, folder,
                              ray=RaySpec(gpus_per_worker=0, workers=workers))  # fmt: skip
    seconds = time.perf_counter() - t0
    if not all(o.status == "done" for o in outcomes):
        raise SystemExit(f"a job failed: {outcomes}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--len", default="1s")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("bench/ray.json"))
    args = parser.parse_args()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    walls: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        jobs = entries(Path(tmp), args.len, args.steps)
        for r in range(args.repeats):
            for workers in (1, 2):
                walls[workers].append(timed(jobs, workers, Path(tmp) / f"{workers}-{r}"))
                print(f"repeat {r + 1}: {workers} worker(s) {walls[workers][-1]:.1f} s")
    ray.shutdown()
    medians = {w: statistics.median(v) for w, v in walls.items()}
    report = {"jobs": JOBS, "len": args.len, "steps": args.steps, "walls": walls,
              "median_1_worker": round(medians[1], 2), "median_2_workers": round(medians[2], 2),
              "ratio_2_over_1": round(medians[2] / medians[1], 3)}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
