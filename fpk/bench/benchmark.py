"""`fpk benchmark`: what FramePack claims, measured on the model at hand.

1. quality and drift by sampling order and section size on held-out continuous-motion scenes
   (world.continuous_scene), against the world's ground truth: per-second metrics, their
   drift the paper's way (last 10 s minus first 10 s) and the largest per-frame jump;
2. packing against the alternatives (full context, a fixed window): tokens, seconds and peak
   memory per section as the video grows, and identity kept at the end;
3. throughput against diffusers' HunyuanVideoFramepackPipeline on the same components;
4. the cost of section 1, 10 and 50 of a long video.

Results go to `report.json` (schema "fpk.benchmark/1", documented in the README) and PNG
plots. Every timing is a ratio or a series measured in this one process.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fpk import events as ev
from fpk.model.packing import Level, Schedule
from fpk.sampling import orders
from fpk.synthetic import metrics, world

SCHEMA = "fpk.benchmark/1"
#: Orders that generate from a start image, the drifting baseline first and the official one
#: last (the registry lists them the other way round; forward continues a clip: fpk extend).
ORDERS = tuple(name for name in reversed(orders.ORDERS) if name != "forward")
PARTS = ("quality", "packing", "diffusers", "section_cost", "speed")
DEFAULT_PARTS = PARTS[:-1]  # speed (fpk.bench.speed) only when asked for
COST_SIGMA = 0.5  # a mid-trajectory step: the cost of a forward does not depend on it
COST_GUIDANCE = 10.0  # the official distilled guidance


@dataclass(frozen=True)
class Plan:
    samplers: tuple[str, ...]
    windows: tuple[int, ...]
    seeds: int
    seconds: float  # video length for the quality part
    steps: int
    sections: tuple[int, ...]  # section counts at which cost is measured
    time_cap: float  # seconds per section past which a method stops
    memory_cap_mb: float
    parts: tuple[str, ...] = DEFAULT_PARTS


def make_plan(
    sampler: str,
    quick: bool,
    seeds: int,
    parts: tuple[str, ...] | None,
    seconds: float | None = None,
    windows: tuple[int, ...] | None = None,
) -> Plan:
    from fpk.errors import UsageError

    bad = [p for p in parts or () if p not in PARTS]
    if bad:
        raise UsageError(f"unknown --part '{bad[0]}' (valid: {', '.join(PARTS)})")
    if sampler != "all" and sampler not in ORDERS:
        raise UsageError(f"unknown sampler '{sampler}' (valid: {', '.join(ORDERS)}, all)")
    samplers = ORDERS if sampler == "all" else (sampler,)
    plan = Plan(
        samplers=samplers,
        windows=(1, 4, 9),
        seeds=seeds,
        seconds=4.0 if quick else 20.0,
        steps=6 if quick else 25,
        sections=(1, 2, 5, 10, 20, 50, 100) if quick else tuple(range(1, 101)),
        time_cap=5.0 if quick else 60.0,
        memory_cap_mb=8000.0,
    )
    if seconds is not None:
        plan = replace(plan, seconds=seconds)
    if windows:
        if min(windows) < 1:
            raise UsageError(f"--window {min(windows)}: give a section size of 1 or more")
        plan = replace(plan, windows=tuple(windows))
    return replace(plan, parts=parts) if parts else plan


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- 1. quality and drift ----------------------------------------------------------------


def quality(rt, plan: Plan, out: Path, sink: ev.EventSink) -> dict[str, Any]:
    from PIL import Image

    from fpk.media.video import read_video
    from fpk.run.jobs import resolve_job
    from fpk.run.pipeline import run_job

    rows = []
    for seed in range(plan.seeds):
        scene = world.continuous_scene(world.HELD_OUT + seed)
        image = out / "inputs" / f"scene-{seed}.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(world.render_frame(scene, 0)).save(image)
        for sampler in plan.samplers:
            for window in plan.windows:
                name = f"q-{sampler}-w{window}-s{seed}"
                sink(ev.Message("benchmark", f"quality: {name}"))
                job = resolve_job(
                    rt.preset,
                    {"image": str(image), "prompt": scene.prompt, "len": f"{plan.seconds}s"},
                    {"sampler": sampler, "window": window, "steps": plan.steps, "name": name,
                     "seed": seed},
                    out / "videos",
                )  # fmt: skip
                frames, _, _ = read_video(run_job(rt, job))
                per_sec = metrics.per_second(frames, scene)
                first = frames[: 1 + window * rt.temporal]  # the video's first section
                rows.append({"sampler": sampler, "window": window, "seed": seed,
                             "prompt": scene.prompt, "per_second": per_sec,
                             "largest_jump_first_section": metrics.largest_jump(first, scene),
                             "largest_jump": metrics.largest_jump(frames, scene)})  # fmt: skip
    return {"runs": rows, "summary": summarise(rows, plan)}


def summarise(rows: list[dict], plan: Plan) -> dict[str, Any]:
    """Mean and spread of every metric and of its drift, per sampler; wins per metric."""
    out: dict[str, Any] = {}
    for sampler in plan.samplers:
        mine = [r for r in rows if r["sampler"] == sampler]
        entry = {}
        for m in metrics.METRICS:
            means = [float(np.mean([s[m] for s in r["per_second"]])) for r in mine]
            drifts = [metrics.drift([s[m] for s in r["per_second"]]) for r in mine]
            entry[m] = {"mean": _mean(means), "std": _std(means),
                        "drift": _mean(drifts), "drift_std": _std(drifts)}  # fmt: skip
        for key in ("largest_jump_first_section", "largest_jump"):
            jumps = [r[key] for r in mine if key in r]
            entry[key] = {"mean": _mean(jumps), "max": max(jumps, default=float("nan"))}
        out[sampler] = entry
    out["wins"] = wins(out, plan.samplers)
    out["versus_vanilla"] = versus_vanilla(rows, plan.samplers)
    return out


def versus_vanilla(rows: list[dict], samplers: tuple[str, ...]) -> dict[str, Any]:
    """Per order other than vanilla and per metric, the paired comparison of drift on the
    same scenes (seed and section size): `gain` the mean of the order's drift minus vanilla's,
    signed so that positive means the order drifts less toward worse; `std` its spread over
    the pairs, `sem` its standard error, `better` the pairs where the order drifts less, of
    `pairs`. Empty where vanilla was not run."""
    base = {(r["seed"], r["window"]): r for r in rows if r["sampler"] == "vanilla"}
    out: dict[str, Any] = {}
    for sampler in samplers:
        mine = [r for r in rows if r["sampler"] == sampler and (r["seed"], r["window"]) in base]
        if sampler == "vanilla" or not mine:
            continue
        out[sampler] = {}
        for m in metrics.METRICS:
            sign = 1 if metrics.HIGHER_IS_BETTER[m] else -1
            gains = [
                sign
                * (
                    metrics.drift([s[m] for s in r["per_second"]])
                    - metrics.drift([s[m] for s in base[r["seed"], r["window"]]["per_second"]])
                )
                for r in mine
            ]
            n = len(gains)
            std = float(np.std(gains, ddof=1)) if n > 1 else 0.0
            out[sampler][m] = {"gain": _mean(gains), "std": std, "sem": std / n**0.5,
                               "better": sum(g > 0 for g in gains), "pairs": n}  # fmt: skip
    return out


def wins(summary: dict[str, Any], samplers: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """Per sampler: metrics where it has the best mean, and the least drift (toward worse)."""
    result = {s: {"best_mean": 0, "least_drift": 0} for s in samplers}
    for m in metrics.METRICS:
        sign = 1 if metrics.HIGHER_IS_BETTER[m] else -1
        best = max(samplers, key=lambda s: sign * summary[s][m]["mean"])
        result[best]["best_mean"] += 1
        # drift toward worse is negative for higher-is-better metrics: smallest loss wins
        steady = max(samplers, key=lambda s: min(0.0, sign * summary[s][m]["drift"]))
        result[steady]["least_drift"] += 1
    return result


def _mean(xs: list[float]) -> float:
    return float(np.mean(xs)) if xs else float("nan")


def _std(xs: list[float]) -> float:
    return float(np.std(xs)) if len(xs) > 1 else 0.0


# --- 2 and 4. cost per section -----------------------------------------------------------


def packing_methods(rt) -> dict[str, Schedule]:
    base = rt.schedule
    big = 10**6
    return {
        base.name: base,
        "full context": Schedule("full", (Level((1, 2, 2), big),), tail="delete"),
        "window 9": Schedule("window9", (Level((1, 2, 2), 9),), tail="delete"),
    }


def section_seconds(rt, schedule: Schedule, history: int, repeats: int = 2) -> tuple[float, int]:
    """Seconds of one denoising step of a section with `history` frames behind it, tokens."""
    from fpk.bench.speed import history_section
    from fpk.model.call import (
        blank_image_embeds,
        latent_channels,
        predict_flow,
        section_inputs,
        tokens_per_frame,
    )
    from fpk.model.context import context_tokens

    window = rt.preset.sampling.window
    grid = rt.preset.latent_grid()
    model = rt.components.transformer
    c = latent_channels(rt.components)
    step, ctx = history_section(schedule, grid, window, c, history)
    prompt = rt.prompt("the red square moves to the top right corner and stops")
    positions = torch.tensor([list(step.target)])
    inputs = section_inputs([prompt], blank_image_embeds(rt.components), positions, [ctx],
                            COST_GUIDANCE)  # fmt: skip
    x = torch.randn(1, c, window, grid.height, grid.width)
    sigma = torch.tensor([COST_SIGMA])
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            t = time.perf_counter()
            predict_flow(model, x, sigma, inputs)
            times.append(time.perf_counter() - t)
    per_frame = tokens_per_frame(model.config, grid.height, grid.width)
    tokens = sum(n for _, n in context_tokens(ctx, grid)) + window * per_frame
    return min(times), tokens


def packing_cost(rt, plan: Plan, sink: ev.EventSink) -> dict[str, Any]:
    window = rt.preset.sampling.window
    out: dict[str, Any] = {}
    for name, schedule in packing_methods(rt).items():
        rows, stopped = [], None
        for k in plan.sections:
            secs, tokens = section_seconds(rt, schedule, (k - 1) * window)
            rows.append({"section": k, "seconds": round(secs, 5), "tokens": tokens,
                         "peak_rss_mb": round(peak_rss_mb(), 1)})  # fmt: skip
            sink(ev.Message("benchmark", f"cost: {name}, section {k}: {secs:.3f} s, {tokens} tok"))
            if secs > plan.time_cap or peak_rss_mb() > plan.memory_cap_mb:
                stopped = (
                    f"stopped after section {k}: {secs:.1f} s per step > cap {plan.time_cap} s"
                )
                break
        out[name] = {"rows": rows, "stopped": stopped}
    return out


def identity(rt, plan: Plan, out: Path) -> dict[str, Any]:
    """Colour and position error in the last second, per packing method (what is forgotten)."""
    from PIL import Image

    from fpk.media.video import read_video
    from fpk.run.jobs import resolve_job
    from fpk.run.pipeline import run_job

    result = {}
    scene = world.scene(world.HELD_OUT)
    image = out / "inputs" / "identity.png"
    image.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(world.render_frame(scene, 0)).save(image)
    for name, schedule in packing_methods(rt).items():
        packed = dataclasses.replace(
            rt, components=dataclasses.replace(rt.components, schedule=schedule)
        )
        entry = {"image": str(image), "prompt": scene.prompt, "len": f"{plan.seconds}s"}
        flags = {"sampler": "vanilla", "steps": plan.steps, "name": f"id-{schedule.name}"}
        job = resolve_job(rt.preset, entry, flags, out / "videos")
        frames, _, _ = read_video(run_job(packed, job))
        last = metrics.per_second(frames, scene)[-1]
        result[name] = {"last_second": last}
    return result


def section_cost(cost: dict[str, Any], name: str) -> dict[str, float]:
    rows = {r["section"]: r["seconds"] for r in cost[name]["rows"]}
    return {str(k): rows[k] for k in (1, 10, 50) if k in rows}


# --- 3. against diffusers ----------------------------------------------------------------


def against_diffusers(steps: int, sections: int, runs: int, sink: ev.EventSink) -> dict[str, Any]:
    """fpk vs HunyuanVideoFramepackPipeline on the same tiny released-layout components,
    Euler, same sections and steps, start image to mp4 on both sides (diffusers' frames
    written by fpk's encoder); alternating runs in this process; median seconds.
    diffusers runs as it ships (`speedup`) and, apart, on fpk's own VAE object with its
    oneDNN convolutions (`speedup_same_vae`), so that what fpk's VAE set-up is worth shows;
    `speedup_frames` leaves diffusers' mp4 writing out (fpk's stays in)."""
    from fpk.bench.comparison import diffusers_runner, fpk_runner, released_components

    with tempfile.TemporaryDirectory() as tmp:
        rt, image = released_components(Path(tmp))
        out = Path(tmp) / "out"
        runners = {
            "fpk": fpk_runner(rt, image, sections, steps, out),
            "diffusers": diffusers_runner(rt, image, sections, steps, out),
            "diffusers_same_vae": diffusers_runner(rt, image, sections, steps, out, stock=False),
        }
        times: dict[str, list[float]] = {name: [] for name in runners}
        writes: list[float] = []
        for fn in runners.values():
            fn()  # warm up
        for i in range(runs):
            for name, fn in runners.items():
                t = time.perf_counter()
                wrote = fn()
                times[name].append(time.perf_counter() - t)
                if name == "diffusers":
                    writes.append(wrote)
            sink(ev.Message("benchmark", f"diffusers comparison: run {i + 1}/{runs}"))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    frames = statistics.median(t - w for t, w in zip(times["diffusers"], writes, strict=True))
    return {"fpk_seconds": round(med["fpk"], 4), "diffusers_seconds": round(med["diffusers"], 4),
            "diffusers_same_vae_seconds": round(med["diffusers_same_vae"], 4),
            "diffusers_frames_seconds": round(frames, 4),
            "diffusers_write_seconds": round(statistics.median(writes), 4),
            "speedup": round(med["diffusers"] / med["fpk"], 3),
            "speedup_same_vae": round(med["diffusers_same_vae"] / med["fpk"], 3),
            "speedup_frames": round(frames / med["fpk"], 3),
            "runs": runs, "sections": sections, "steps": steps,
            **{f"{name}_all": ts for name, ts in times.items()}}  # fmt: skip


# --- the whole run -----------------------------------------------------------------------


def run(
    rt,
    plan: Plan,
    out: Path,
    sink: ev.EventSink = ev.ignore,
    diffusers_fn: Callable[..., dict] = against_diffusers,
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    report: dict[str, Any] = {"schema": SCHEMA, "preset": rt.preset.name,
                              "plan": plan.__dict__, "device": str(rt.device)}  # fmt: skip
    if "quality" in plan.parts:
        report["quality"] = quality(rt, plan, out, sink)
    if "packing" in plan.parts or "section_cost" in plan.parts:
        cost = packing_cost(rt, plan, sink)
        report["packing"] = {"cost": cost, "identity": identity(rt, plan, out)}
        report["section_cost"] = section_cost(cost, rt.schedule.name)
    if "diffusers" in plan.parts:
        report["diffusers"] = diffusers_fn(plan.steps, 3, 3, sink)
    if "speed" in plan.parts:
        from fpk.bench.speed import run_speed

        report["speed"] = run_speed(rt.preset, rt.device, rt.dtype, steps=plan.steps,
                                    model=rt.components.transformer, sink=sink)  # fmt: skip
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["peak_rss_mb"] = round(peak_rss_mb(), 1)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    report["plots"] = plots(report, out)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def random_speed(preset, device: str | None, dtype: str | None, plan: Plan, out: Path,
                 sink: ev.EventSink = ev.ignore) -> dict[str, Any]:  # fmt: skip
    """`--part speed --random-weights`: the speed report of the preset's architecture with
    random weights (fpk.bench.speed), no weights loaded."""
    from fpk.bench.speed import run_speed
    from fpk.model.devices import pick_device, pick_dtype

    dev = pick_device(device)
    t0 = time.perf_counter()
    report = {"schema": SCHEMA, "preset": preset.name, "plan": plan.__dict__,
              "device": str(dev), "random_weights": True,
              "speed": run_speed(preset, dev, pick_dtype(dtype, dev), steps=plan.steps,
                                 sink=sink)}  # fmt: skip
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["peak_rss_mb"] = round(peak_rss_mb(), 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def plots(report: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    if "quality" in report:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for sampler in report["plan"]["samplers"]:
            runs = [r for r in report["quality"]["runs"] if r["sampler"] == sampler]
            n = min(len(r["per_second"]) for r in runs)
            for ax, m, label in (
                (axes[0], "psnr", "PSNR (dB)"),
                (axes[1], "position_error", "object position error (px)"),
            ):
                ys = np.mean([[s[m] for s in r["per_second"][:n]] for r in runs], axis=0)
                ax.plot(np.arange(1, n + 1), ys, marker="o", label=sampler)
                ax.set_xlabel("second of video")
                ax.set_ylabel(label)
        axes[0].set_title("quality over time against ground truth")
        axes[1].set_title("drift: where the object is vs where it should be")
        axes[0].legend()
        fig.tight_layout()
        fig.savefig(out / "quality.png", dpi=100)
        plt.close(fig)
        made.append("quality.png")
    if "packing" in report:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for name, data in report["packing"]["cost"].items():
            xs = [r["section"] for r in data["rows"]]
            axes[0].plot(xs, [r["seconds"] for r in data["rows"]], marker="o", label=name)
            axes[1].plot(xs, [r["tokens"] for r in data["rows"]], marker="o", label=name)
        for ax, label in ((axes[0], "seconds per denoising step"), (axes[1], "tokens in context")):
            ax.set_xlabel("section index (video length in sections)")
            ax.set_ylabel(label)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.legend()
        axes[0].set_title("cost per section as the video grows")
        axes[1].set_title("transformer context per section")
        fig.tight_layout()
        fig.savefig(out / "cost.png", dpi=100)
        plt.close(fig)
        made.append("cost.png")
    return made
