"""A LoRA teaches the tiny model a motion it does not know: an object that moves in a circle.

1. data: 8 synthetic-world clips of 4 s (`world.circling_scene(0..7)`: a turn of 16 px radius
   every 40 frames), as `NN.mp4` + `NN.txt`, the layout `fpk train --lora --data` reads;
2. train: `fpk train --lora --data OUT/data --run OUT/run` (resumes where it stopped; skipped
   when a finished run of --steps is there);
3. eval: one `fpk generate --manifest` of the held-out circling starts (seeds from
   world.HELD_OUT, never trained on), each once with `lora = [the trained file]` and once
   without, same seed; every frame scored against the world's ground truth:
   position error of the object's centre, turns made around the circle's centre (truth: 0.75 a
   second), "follows": mean position error under 4 px with the object solid in most frames, and
   "circles": within half a turn of the truth's turns with the object solid in most frames
   (the motion, whatever its phase); each video's phase lag (the median over its frames of
   how many frames the object's angle around the circle's centre runs behind the truth's)
   and "circles in phase": circles with a lag of at most one frame.

    .venv/bin/python benchmarks/lora_circle.py --out /tmp/lora-circle --steps 800

Writes OUT/report.json and prints it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FPK = [sys.executable, "-m", "fpk.cli"]
TRAIN_CLIPS = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--lora-layers", default="all", help="fpk train --lora-layers.")
    parser.add_argument("--first-share", type=float, default=0.25,
                        help="fpk train --first-share: share of first sections.")  # fmt: skip
    parser.add_argument("--scenes", type=int, default=10, help="Held-out starts to score.")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sampler", default="inverted", help="The generate jobs' sampler.")
    parser.add_argument("--train-sampler", default=None,
                        help="fpk train --sampler (default: the mix of orders).")  # fmt: skip
    parser.add_argument("--weight", type=float, default=1.0,
                        help="The LoRA's weight in the generate jobs (PATH:WEIGHT).")  # fmt: skip
    parser.add_argument("--eval", default="eval", help="Folder (in --out) of the evaluation.")
    parser.add_argument("--clips", choices=("seeds", "stratified"), default="seeds",
                        help="The 8 training clips: circling_scene(0..7), or one per start "
                        "position with every shape x background and six colours (training_scenes)."
                        )  # fmt: skip
    parser.add_argument("--reg", type=int, default=0,
                        help="Prior preservation: this many of the world's goal scenes "
                        "(the base model's own training scenes, seeds 0..N-1) as --reg-data."
                        )  # fmt: skip
    parser.add_argument("--reg-share", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=None,
                        help="fpk train --seed (default: its own).")  # fmt: skip
    parser.add_argument("--lora-dropout", type=float, default=0.0,
                        help="fpk train --lora-dropout.")  # fmt: skip
    parser.add_argument("--context-noise", type=float, default=0.0,
                        help="fpk train --context-noise: noise on the history frames.")  # fmt: skip
    parser.add_argument("--caption-dropout", type=float, default=0.0,
                        help="fpk train --caption-dropout: share of samples on the empty prompt."
                        )  # fmt: skip
    parser.add_argument("--shift-copies", type=int, default=0,
                        help="fpk train --shift-copies: shifted copies of each clip.")  # fmt: skip
    parser.add_argument("--starts", choices=("held-out", "train"), default="held-out",
                        help="Score held-out starts, or the training clips' own (does the "
                        "LoRA reproduce what it was trained on?).")  # fmt: skip
    parser.add_argument("--lora", type=Path, default=None,
                        help="Score this LoRA file (an earlier export, another run's) instead "
                        "of training one.")  # fmt: skip
    args = parser.parse_args()
    from fpk.train.data import write_world_clips

    data = args.out / "data"
    if not (data / f"{TRAIN_CLIPS - 1:02d}.txt").is_file():
        write_world_clips(data, training_scenes(args.clips), 4.0)
    if args.reg and not (args.out / "reg" / f"{args.reg - 1:02d}.txt").is_file():
        from fpk.synthetic import world

        write_world_clips(args.out / "reg", [world.scene(i) for i in range(args.reg)], 4.0)
    lora, train_s = (args.lora, None) if args.lora else train(args, data)
    report = evaluate(args, lora)
    report["lora_file"] = str(lora)
    trained_here = " ".join(["fpk train", *train_flags(args, data)])
    report |= {"train_command": None if args.lora else trained_here,  # --lora: trained elsewhere
               "train_seconds": train_s, "train_clips": TRAIN_CLIPS,
               "clips": args.clips, "reg_clips": args.reg}  # fmt: skip
    (args.out / f"report-{args.eval}.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "videos"}, indent=1))


def training_scenes(kind: str) -> list:
    """The 8 training clips' scenes. `seeds`: world.circling_scene(0..7), looks and starts as
    the seeds draw them (they may repeat); `stratified`: clip k starts at the k-th of the 9
    start positions circling_scene draws from, with shape k % 2, background (k // 2) % 4
    (every shape x background once) and colour k % 6: the clips differ in everything but the
    motion."""
    from dataclasses import replace

    from fpk.synthetic import world

    if kind == "seeds":
        return [world.circling_scene(i) for i in range(TRAIN_CLIPS)]
    xs = range(0, world.SIZE - world.OBJECT - 2 * world.RADIUS + 1, world.GRID)
    ys = range(world.RADIUS, world.SIZE - world.OBJECT - world.RADIUS + 1, world.GRID)
    starts = [(x, y) for y in ys for x in xs]
    colours, backgrounds = list(world.COLOURS), list(world.BACKGROUNDS)
    base = world.circling_scene(0)
    return [replace(base, start=starts[k], shape=world.SHAPES[k % 2],
                    background=backgrounds[(k // 2) % 4], colour=colours[k % 6])
            for k in range(TRAIN_CLIPS)]  # fmt: skip


def train_flags(args, data: Path) -> list[str]:
    """The `fpk train` flags that define the LoRA (what the report records as its command)."""
    flags = ["--lora", "--data", str(data), "--steps", str(args.steps), "--batch",
             str(args.batch), "--lr", str(args.lr), "--rank", str(args.rank),
             "--first-share", str(args.first_share)]  # fmt: skip
    if args.train_sampler:
        flags += ["--sampler", args.train_sampler]
    if args.lora_layers != "all":
        flags += ["--lora-layers", args.lora_layers]
    if args.context_noise:
        flags += ["--context-noise", str(args.context_noise)]
    if args.lora_dropout:
        flags += ["--lora-dropout", str(args.lora_dropout)]
    if args.shift_copies:
        flags += ["--shift-copies", str(args.shift_copies)]
    if args.caption_dropout:
        flags += ["--caption-dropout", str(args.caption_dropout)]
    if args.seed is not None:
        flags += ["--seed", str(args.seed)]
    if args.reg:
        flags += ["--reg-data", str(args.out / "reg"), "--reg-share", str(args.reg_share)]
    return flags


def train(args, data: Path) -> tuple[Path, float | None]:
    run = args.out / "run"
    folder = run / "tiny" / "lora"
    lora = folder / "pytorch_lora_weights.safetensors"
    if _finished_step(folder) == args.steps and lora.is_file():
        return lora, None
    cmd = [*FPK, "train", *train_flags(args, data), "--checkpoint-every", "100",
           "--sample-every", str(args.steps), "--threads", str(args.threads), "--run", str(run),
           "--quiet"]  # fmt: skip
    if (folder / "checkpoint.safetensors").is_file():
        cmd.append("--resume")
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return lora, round(time.perf_counter() - t0, 1)


def _finished_step(folder: Path) -> int:
    from safetensors import safe_open

    path = folder / "checkpoint.safetensors"
    if not path.is_file():
        return 0
    with safe_open(str(path), "pt") as f:
        return int(f.metadata()["step"])


def evaluate(args, lora: Path) -> dict:
    from fpk.synthetic import world

    work = args.out / args.eval
    (work / "starts").mkdir(parents=True, exist_ok=True)
    jobs, scenes = [], {}
    first, train_set = world.HELD_OUT, training_scenes(args.clips)
    weighted = f"{lora.resolve()}:{args.weight}"  # absolute: the manifest resolves from its folder
    count = args.scenes if args.starts == "held-out" else min(args.scenes, TRAIN_CLIPS)
    for i in range(count):
        s = world.circling_scene(first + i) if args.starts == "held-out" else train_set[i]
        image = work / "starts" / f"{i:02d}.png"
        Image.fromarray(world.render_frame(s, 0)).save(image)
        for name, loras in ((f"base-{i:02d}", []), (f"lora-{i:02d}", [weighted])):
            jobs.append({"name": name, "image": str(image), "prompt": s.prompt,
                         "len": f"{args.seconds}s", "seed": i, "lora": loras,
                         "sampler": args.sampler})  # fmt: skip
            scenes[name] = s
    manifest = work / "jobs.jsonl"
    manifest.write_text("".join(json.dumps(j) + "\n" for j in jobs))
    t0 = time.perf_counter()
    subprocess.run([*FPK, "generate", "--manifest", str(manifest), "--out", str(work / "videos"),
                    "--quiet", "--no-preview"],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)  # fmt: skip
    wall = round(time.perf_counter() - t0, 1)
    videos = {n: score(work / "videos" / f"{n}.mp4", s) for n, s in scenes.items()}
    out: dict = {"starts": args.starts, "weight": args.weight, "scenes": count,
                 "seconds": args.seconds, "eval_wall_s": wall, "sampler": args.sampler,
                 "true_turns": round(args.seconds * world.FPS / world.PERIOD, 2)}  # fmt: skip
    for kind in ("base", "lora"):
        rows = [v for n, v in videos.items() if n.startswith(kind)]
        out[kind] = {
            "follows": sum(r["follows"] for r in rows),
            "circles": sum(r["circles"] for r in rows),
            "circles_in_phase": sum(r["circles"] and abs(r["lag_frames"]) <= 1 for r in rows),
            "mean_position_error_px": round(float(np.mean([r["position_error"] for r in rows])), 2),
            "mean_turns": round(float(np.mean([r["turns"] for r in rows])), 2),
            "solid_share": round(float(np.mean([r["solid"] for r in rows])), 3),
            "median_abs_lag_frames": round(float(np.median([abs(r["lag_frames"])
                                                            for r in rows])), 1),
        }  # fmt: skip
    out["videos"] = videos
    return out


def score(path: Path, scene) -> dict:
    """Position error and solidity per frame (fpk.synthetic.metrics), and the turns the
    detected centre makes around the circle's centre."""
    from fpk.media.video import read_video
    from fpk.synthetic import metrics, world

    frames, _, _ = read_video(path)
    scores = [metrics.score_frame(f, scene, i) for i, f in enumerate(frames)]
    err = float(np.mean([s.position_error for s in scores[1:]]))
    solid = float(np.mean([s.solid for s in scores]))
    cx = scene.start[0] + world.RADIUS + world.OBJECT / 2
    cy = scene.start[1] + world.OBJECT / 2
    angles, truth = [], []
    for i, f in enumerate(frames):
        mask = metrics.object_pixels(f, world.COLOURS[scene.colour])
        if mask.sum():
            ys, xs = np.nonzero(mask)
            angles.append(np.arctan2(-(ys.mean() + 0.5 - cy), xs.mean() + 0.5 - cx))
            tx, ty = scene.centre(i)
            truth.append(np.arctan2(-(ty - cy), tx - cx))
    # clockwise on screen is a falling angle (y up); a turn is 2 pi
    turns = -float(np.sum(np.diff(np.unwrap(angles)))) / (2 * np.pi) if len(angles) > 1 else 0.0
    # phase lag: how many frames the detected angle runs behind the truth's (median over the
    # frames; the start, at the circle's leftmost point where the angle is +-pi, counted as
    # in phase: 0 where the object goes round with the truth, growing where it stalls)
    lag = float(world.PERIOD * len(frames))  # no object seen: as far behind as can be
    if angles:
        behind = (np.unwrap(angles) - np.unwrap(truth)) / (2 * np.pi) * world.PERIOD
        behind -= round(behind[0] / world.PERIOD) * world.PERIOD
        lag = float(np.median(behind))
    follows = err < metrics.AT_GOAL_PX and solid >= 0.5
    true_turns = (len(frames) - 1) / world.PERIOD
    circles = abs(turns - true_turns) <= 0.5 and solid >= 0.5  # the motion, in any phase
    return {"position_error": round(err, 2), "turns": round(turns, 2), "solid": round(solid, 3),
            "lag_frames": round(lag, 1), "follows": bool(follows),
            "circles": bool(circles)}  # fmt: skip


if __name__ == "__main__":
    main()
