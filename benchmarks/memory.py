"""Peak memory of `fpk generate` against video length (DESIGN.md: memory flat in length).

Each length runs in its own process on the same tiny components (random weights of the
real classes, the `tiny` preset's shapes) and reports its peak RSS; the ratio of the longest
to the shortest is the figure (target: at most 1.15).

    .venv/bin/python benchmarks/memory.py            # 10 s and 120 s
    .venv/bin/python benchmarks/memory.py --lengths 10s 60s 120s --steps 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, sys, time
from pathlib import Path
from fpk.run import batch
from fpk.config import load_preset
weights, out, length, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
t = time.perf_counter()
flags = {"len": length, "steps": steps, "prompt": "a red circle", "name": "m"}
done = batch.generate(load_preset("tiny"), [{}], flags, Path(out), weights_dir=Path(weights),
                      device="cpu")
assert done[0].status == "done", done
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"length": length, "peak_rss_mb": round(peak, 1),
                  "seconds": round(time.perf_counter() - t, 1)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", nargs="+", default=["10s", "120s"])
    parser.add_argument("--steps", type=int, default=1)
    args = parser.parse_args()
    from fpk.config import load_preset
    from fpk.model.tiny import build_components, save_components
    from fpk.synthetic.world import vocabulary

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "weights"
        save_components(build_components(load_preset("tiny"), vocabulary()), weights)
        rows = []
        for length in args.lengths:
            out = (
                subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        CHILD,
                        str(weights),
                        str(Path(tmp) / length),
                        length,
                        str(args.steps),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            rows.append(json.loads(out))
            print(out, flush=True)
    ratio = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    print(json.dumps({"ratio_longest_to_shortest": round(ratio, 3), "target": 1.15}))


if __name__ == "__main__":
    main()
