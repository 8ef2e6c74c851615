"""Does the tiny transformer read its prompt? Its flow-matching loss on held-out sections with
the true prompts, and with "left"/"right" or "top"/"bottom" swapped (same sections, noise and
sigma). A model that reads where the object goes loses accuracy when the corner is swapped.

    .venv/bin/python benchmarks/prompt_probe.py --weights fpk/weights/tiny
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fpk.model.loading import EMBEDDED_DIR
from fpk.synthetic import world
from fpk.train import sections as tr


def swap(text: str, a: str, b: str) -> str:
    """Whole words only ("top" is also in "stops")."""
    return " ".join({a: b, b: a}.get(w, w) for w in text.split(" "))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, default=EMBEDDED_DIR / "tiny")
    p.add_argument("--scenes", type=int, default=40)
    p.add_argument("--sections", type=int, default=64)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument(
        "--first-only",
        action="store_true",
        help="only the section generated first under the inverted order (empty history): "
        "where the goal can come from nothing but the prompt",
    )
    args = p.parse_args()
    task = tr.probe_task(args.weights, args.threads)
    comps, model = task.comps, task.model
    task.videos = [tr.encode_scene(comps, task.rt, world.HELD_OUT + i) for i in range(args.scenes)]
    items = [task.sample_one(first=args.first_only) for _ in range(args.sections)]
    x0 = torch.stack([t for *_, t in items])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))

    def loss(edit, sigma: float) -> float:
        xt = (1 - sigma) * x0 + sigma * noise
        prompts = [edit(v["prompt"]) for v, *_ in items]
        with torch.no_grad():
            pred = task.flow(model, items, xt, torch.full((x0.shape[0],), sigma), prompts)
        return torch.nn.functional.mse_loss(pred, noise - x0).item()

    rows = []
    for sigma in (0.9, 0.6, 0.3):
        rows.append({
            "sigma": sigma,
            "true": loss(lambda t: t, sigma),
            "left_right_swapped": loss(lambda t: swap(t, "left", "right"), sigma),
            "top_bottom_swapped": loss(lambda t: swap(t, "top", "bottom"), sigma),
        })  # fmt: skip
        print(json.dumps({k: round(v, 5) for k, v in rows[-1].items()}), flush=True)


if __name__ == "__main__":
    main()
