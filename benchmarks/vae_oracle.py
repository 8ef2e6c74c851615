"""The tiny VAE alone on held-out world videos: encode the true video, decode it the way
`fpk generate` decodes (chunks of one section with overlap), score it like heldout.py.

This is the ceiling of the model card's criteria for a perfect transformer, the largest
per-frame jump of the object's centre (metrics.largest_jump) included: the true video's own
is 2.83 px (goal and bouncing scenes) or 2.0 px (one-axis motions); what the VAE's round trip
adds to it is the floor of any generated video's.

    .venv/bin/python benchmarks/vae_oracle.py --scenes 20 --seconds 5
    .venv/bin/python benchmarks/vae_oracle.py --scenes 20 --seconds 5 --continuous
    .venv/bin/python benchmarks/vae_oracle.py --scenes 20 --seconds 4 --circling
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from fpk.config import load_preset
from fpk.media import decoding
from fpk.media.decoding import stream_frames
from fpk.model import conditioning as cond
from fpk.run.batch import load_runtime
from fpk.synthetic import metrics, world


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=int, default=20)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--weights", type=Path, default=None)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--continuous", action="store_true", help="continuous-motion scenes")
    p.add_argument("--circling", action="store_true", help="lora_circle.py's circling scenes")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rt = load_runtime(load_preset("tiny"), args.weights, "cpu", "float32")
    vae, window = rt.components.vae, rt.preset.sampling.window
    vae.use_framewise_encoding = False
    frames = int(args.seconds * world.FPS)
    latent_frames = (frames - 1 + 3) // 4 + 1
    kind = (world.continuous_scene if args.continuous
            else world.circling_scene if args.circling else world.scene)  # fmt: skip
    rows = []
    for i in range(args.scenes):
        s = kind(world.HELD_OUT + i)
        truth = world.render(s, 1 + 4 * (latent_frames - 1))
        lat = cond.encode_latents(vae, cond.to_tensor(truth))

        def decode(a: int, b: int, lat=lat) -> torch.Tensor:
            return decoding.decode_latents(vae, lat[:, a:b])

        chunks = stream_frames(decode, latent_frames, window, window, frames)
        out = np.concatenate([decoding.to_uint8(c) for c in chunks])
        per_sec = metrics.per_second(out, s)
        moving = [metrics.psnr(out[f], truth[f]) for f in range(1, 25)]
        rows.append(
            {
                "seed": world.HELD_OUT + i,
                **metrics.end_state(per_sec),
                "first_second_psnr": per_sec[0]["psnr"],
                "moving_psnr": float(np.mean(moving)),
                "first_second_pos": per_sec[0]["position_error"],
                "largest_jump": metrics.largest_jump(out, s),
                "largest_jump_truth": metrics.largest_jump(truth[:frames], s),
                **moves_by_phase(out, s),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print(
        json.dumps(
            {
                "present": sum(r["present"] for r in rows),
                "at_goal": sum(r["at_goal"] for r in rows),
                "first_second_psnr": float(np.mean([r["first_second_psnr"] for r in rows])),
                "moving_psnr": float(np.mean([r["moving_psnr"] for r in rows])),
                "first_second_pos": float(np.mean([r["first_second_pos"] for r in rows])),
                "largest_jump_median": float(np.median([r["largest_jump"] for r in rows])),
                "largest_jump_max": max(r["largest_jump"] for r in rows),
                "move_by_phase": np.mean([r["move_by_phase"] for r in rows], 0).round(2).tolist(),
                "centre_error": float(np.mean([r["centre_error"] for r in rows])),
                "scenes": len(rows),
            }
        )
    )


def moves_by_phase(frames: np.ndarray, s, t: int = 4) -> dict:
    """The object's mean move into pixel frame f, grouped by f's place in its latent frame
    (f mod t: 0 is a latent frame's own pixel frame, 1 .. t - 1 the ones the causal decoder
    makes from it and earlier latents), and its mean centre error against the world's; the
    world's own move is the same in every phase."""
    centres = [metrics.centre(f, s) for f in frames]
    moves: list[list[float]] = [[] for _ in range(t)]
    errors = []
    for f, c in enumerate(centres):
        if c is None:
            continue
        errors.append(float(np.hypot(c[0] - s.centre(f)[0], c[1] - s.centre(f)[1])))
        if f and centres[f - 1] is not None:
            moves[f % t].append(float(np.hypot(*np.subtract(c, centres[f - 1]))))
    return {"move_by_phase": [round(float(np.mean(m)), 2) if m else 0.0 for m in moves],
            "centre_error": round(float(np.mean(errors)), 2)}  # fmt: skip


if __name__ == "__main__":
    main()
