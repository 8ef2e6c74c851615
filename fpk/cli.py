"""The `fpk` command line: a thin Typer layer over the library.

Options are declared once as Annotated aliases. Every FpkError becomes one line on stderr and
its exit code; nothing here computes anything the library does not.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import sys
import tempfile
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from fpk.config import DEFAULT_PRESET, TRAIN_SEED
from fpk.errors import FpkError, UsageError

_STARTED = time.perf_counter()  # wall times count from here (models loading included)

app = typer.Typer(
    name="fpk",
    help="Batch video generation with FramePack: packed frame context, anti-drifting sampling.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
presets_app = typer.Typer(help="List and show presets.", no_args_is_help=True)

# One example a command, shown at the end of its --help.
EXAMPLES = {
    "generate": 'fpk generate --image examples/start.png --len 5s --prompt "the red circle moves '
    'to the top right corner and stops"   (or: fpk generate --manifest jobs.toml)',
    "extend": 'fpk extend out/demo.mp4 --len 2s --prompt "the red circle moves left"',
    "benchmark": "fpk benchmark --sampler inverted --quick",
    "calibrate": "fpk calibrate --preset tiny --steps 25   (then: fpk generate --cache magcache)",
    "inspect-context": "fpk inspect-context --preset base --history-frames 100",
    "check-weights": "fpk check-weights --preset base --weights ~/FramePack-weights",
    "presets": "fpk presets show base",
    "train": "fpk train --lora --data my-clips/ --steps 600 --run /tmp/run  "
    "(a LoRA: my-clips/ holds clip.mp4 + clip.txt pairs)",
}


def _epilog(command: str) -> str:
    return f"Example: {EXAMPLES[command]}"


def _flag(name: str, help: str) -> typer.models.OptionInfo:
    """An on/off option shown as --name/--no-name (no type column)."""
    return typer.Option(f"--{name}/--no-{name}", help=help, metavar="")


# --- option aliases, declared once -------------------------------------------------------

PresetOpt = Annotated[
    str,
    typer.Option(
        "--preset",
        help="Preset name (base, lite, extended, tiny) or path to a TOML file; every command's "
        "default is the same.",
    ),
]
ResolutionOpt = Annotated[
    str | None,
    typer.Option("--resolution", help="WIDTHxHEIGHT, e.g. 832x480 (default: the preset's)."),
]
ScheduleOpt = Annotated[
    str | None,
    typer.Option(
        "--schedule", help="Packing schedule by name (default: the layout the weights use)."
    ),
]
JsonOpt = Annotated[bool, _flag("json", "Print JSON for scripts instead of tables.")]
WeightsOpt = Annotated[
    Path | None,
    typer.Option("--weights", help="Local folder with the weights (default: the preset's)."),
]
OutOpt = Annotated[Path, typer.Option("--out", help="Output folder.")]
DeviceOpt = Annotated[
    str | None, typer.Option("--device", help="cpu, cuda, cuda:1, ... (default: cuda if any).")
]
DtypeOpt = Annotated[
    str | None,
    typer.Option(
        "--dtype",
        help="fp32, bf16 or fp16 (or float32, bfloat16, float16; default: bf16 on a GPU, "
        "fp32 on a CPU).",
    ),
]
OffloadOpt = Annotated[
    str,
    typer.Option(
        "--offload",
        help="none, model, group or sequential: where models wait while others run (auto: "
        "the fastest that fits --vram; on a CPU, none).",
    ),
]
VramOpt = Annotated[
    float | None,
    typer.Option("--vram", help="GPU memory to plan for, in GB (default: the GPU's own; e.g. 8)."),
]
AttentionOpt = Annotated[
    str,
    typer.Option(
        "--attention",
        help="sdpa, flash, flash3, sage, xformers or flex (auto: the fastest installed on a "
        "GPU, sdpa on a CPU).",
    ),
]
CompileOpt = Annotated[
    bool,
    _flag(
        "compile",
        "torch.compile the transformer's blocks (the first step pays the compile time).",
    ),
]
Fp8Opt = Annotated[
    bool, _flag("fp8", "Store the transformer's weights in fp8, compute in --dtype.")
]
ManifestOpt = Annotated[
    Path | None, typer.Option("--manifest", help="TOML or JSONL file with one job per entry.")
]
OverwriteOpt = Annotated[bool, _flag("overwrite", "Redo jobs whose output exists.")]
QuietOpt = Annotated[
    bool, _flag("quiet", "No progress display; print only the output paths and errors.")
]
VerboseOpt = Annotated[
    bool,
    typer.Option("-v", "--verbose", help="Each section's packed context in full.", metavar=""),
]
PreviewOpt = Annotated[
    bool,
    _flag("preview", "Keep OUT/.fpk-work/NAME/preview.png, a contact sheet of each running job."),
]
ExecutorOpt = Annotated[
    str, typer.Option("--executor", help="local (this process) or ray (a Ray cluster).")
]
AddressOpt = Annotated[
    str | None,
    typer.Option("--address", help="Ray cluster: auto or HOST:PORT (default: start one here)."),
]
GpusPerWorkerOpt = Annotated[
    float, typer.Option("--gpus-per-worker", help="Ray: GPUs per worker (CPU workers if none).")
]
WorkersOpt = Annotated[
    int | None,
    typer.Option("--workers", help="Ray: at most this many workers (default: one per slot)."),
]
ShardOpt = Annotated[
    str | None,
    typer.Option("--shard", help="Run only share I/N of the manifest (array jobs: 1/N .. N/N)."),
]
EventsJsonOpt = Annotated[bool, _flag("json", "One JSON event per line (README: JSON events).")]


def _preset_default(help: str, attr: str) -> str:
    from fpk.run.options import preset_defaults

    return f"{help} (default: the preset's: {preset_defaults(attr)})"


def _version(value: bool) -> None:
    if value:
        from fpk import __version__

        typer.echo(f"fpk {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Show fpk's version and exit.",
            is_eager=True,
            callback=_version,
            metavar="",
        ),
    ] = False,
) -> None:
    """Batch video generation with FramePack: packed frame context, anti-drifting sampling."""


# --- commands ----------------------------------------------------------------------------


def inspect_context(
    preset: PresetOpt = DEFAULT_PRESET,
    resolution: ResolutionOpt = None,
    window: Annotated[
        int | None,
        typer.Option("--window", help=_preset_default("Latent frames per section.", "window")),
    ] = None,
    history_frames: Annotated[
        int, typer.Option("--history-frames", help="History frames T behind the section.")
    ] = 1000,
    schedule: ScheduleOpt = None,
    anchors: Annotated[
        int, typer.Option("--anchors", help="Anchored frames at full resolution (the start image).")
    ] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Show the context accounting of a preset: tokens per level, total, bound, parameters."""
    from fpk.config import load_preset, parse_resolution
    from fpk.model.accounting import context_report

    res = parse_resolution(resolution) if resolution else None
    report = context_report(load_preset(preset), res, window, history_frames, schedule, anchors)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
        return
    from fpk.render import print_context_report

    print_context_report(report)


@presets_app.command("list")
def presets_list(as_json: JsonOpt = False) -> None:
    """List the presets that ship with fpk."""
    from fpk.config import load_preset, preset_names

    presets = [load_preset(n) for n in preset_names()]
    if as_json:
        rows = [
            {
                "name": p.name,
                "label": p.label,
                "resolution": str(p.sampling.resolution),
                "layout_in_use": p.layout_in_use,
                "schedule": p.schedule.name,
                "description": p.description,
            }
            for p in presets
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    from fpk.render import print_presets

    print_presets(presets)


@presets_app.command("show")
def presets_show(
    name: Annotated[str, typer.Argument(help="Preset name or TOML path.")], as_json: JsonOpt = False
) -> None:
    """Show every setting of one preset."""
    from fpk.config import load_preset, preset_as_dict

    data = preset_as_dict(load_preset(name))
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    from fpk.render import print_preset

    print_preset(data)


def check_weights(
    preset: PresetOpt = DEFAULT_PRESET,
    weights: WeightsOpt = None,
    schedule: ScheduleOpt = None,
    allow_untrained_layout: Annotated[
        bool,
        _flag("allow-untrained-layout", "Run weights on a layout they were not trained with."),
    ] = False,
    component: Annotated[
        list[str] | None, typer.Option("--component", help="Load only these (repeatable).")
    ] = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Load a preset's weights (safetensors only) and report what was found."""
    from fpk.config import load_preset
    from fpk.model.devices import pick_device, pick_dtype
    from fpk.model.loading import COMPONENTS, load_components

    p = load_preset(preset)
    dev = pick_device(device)
    parts = component or list(COMPONENTS)
    comps = load_components(
        p,
        weights,
        parts=parts,
        schedule=schedule,
        allow_untrained_layout=allow_untrained_layout,
        dtype=pick_dtype(dtype, dev),
        device=dev,
    )
    report = {
        "preset": p.name,
        "device": str(dev),
        "layout": comps.schedule.name if comps.schedule else None,
        "transformer_parameters": sum(t.numel() for t in comps.transformer.parameters())
        if comps.transformer is not None
        else None,
        "new_keys": comps.new_keys,
        "sources": comps.sources,
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    for name, where in report["sources"].items():
        typer.echo(f"{name:18} {where}")
    typer.echo(f"layout in use: {report['layout']}; new projection keys: {len(comps.new_keys)}")


@dataclass(frozen=True)
class RunArgs:
    """How and where a job-running command runs (generate, extend): not job fields."""

    manifest: ManifestOpt = None
    preset: PresetOpt = DEFAULT_PRESET
    weights: WeightsOpt = None
    out: OutOpt = Path("out")
    device: DeviceOpt = None
    dtype: DtypeOpt = None
    offload: OffloadOpt = "auto"
    vram: VramOpt = None
    fp8: Fp8Opt = False
    attention: AttentionOpt = "auto"
    compile: CompileOpt = False
    overwrite: OverwriteOpt = False
    quiet: QuietOpt = False
    verbose: VerboseOpt = False
    preview: PreviewOpt = True
    executor: ExecutorOpt = "local"
    address: AddressOpt = None
    gpus_per_worker: GpusPerWorkerOpt = 1.0
    workers: WorkersOpt = None
    shard: ShardOpt = None
    as_json: EventsJsonOpt = False

    def placement(self) -> dict:
        """batch.generate's `shard`, `ray` and `device_options` arguments, checked."""
        from fpk.run.distributed import RaySpec, parse_shard

        if self.executor not in ("local", "ray"):
            raise UsageError(f"--executor '{self.executor}' is not local or ray")
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"--workers must be at least 1, got {self.workers}")
        if self.shard is not None and self.manifest is None:
            raise UsageError("--shard splits a manifest: give --manifest too")
        spec = RaySpec(self.address, self.gpus_per_worker, self.workers)
        if self.executor == "ray":
            from fpk.run.distributed import import_ray

            import_ray()  # says how to install it before anything loads
        from fpk.model.offload import DeviceOptions

        return {"shard": parse_shard(self.shard) if self.shard else None,
                "ray": spec if self.executor == "ray" else None,
                "device_options": DeviceOptions(self.offload, self.vram, self.fp8,
                                                self.attention, self.compile)}  # fmt: skip


def _run_parameters() -> list[inspect.Parameter]:
    hints = typing.get_type_hints(RunArgs, include_extras=True)
    return [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                          annotation=hints[f.name])
        for f in dataclasses.fields(RunArgs)
    ]  # fmt: skip


def _job_options(command: str):
    """One option per job field of `command`, generated from fpk.run.options (the table that
    also gives the manifest keys and their checks), then the command's own parameters, then
    RunArgs' options; the command gets `(job, run, **own)`."""

    def wrap(fn):
        from fpk.run.options import for_command

        fields = for_command(command)
        own = list(inspect.signature(fn, eval_str=True).parameters.values())[2:]
        runs = _run_parameters()
        params = [_job_parameter(f) for f in fields] + own + runs

        @functools.wraps(fn)
        def command_fn(**kwargs):
            job = {f.name: kwargs.pop(f.name) for f in fields}
            run = RunArgs(**{p.name: kwargs.pop(p.name) for p in runs})
            return fn(job, run, **kwargs)

        command_fn.__signature__ = inspect.Signature(params)
        command_fn.__annotations__ = {p.name: p.annotation for p in params}
        return command_fn

    return wrap


def _job_parameter(field) -> inspect.Parameter:
    metavar = "" if field.kind is bool else None
    option = typer.Option(*field.declaration(), help=field.describe(), metavar=metavar)
    kind = list[str] if field.kind is list else field.kind  # a list: a repeatable option
    return inspect.Parameter(
        field.name,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        default=None,
        annotation=Annotated[kind | None, option],
    )


@_job_options("generate")
def generate(job: dict, run: RunArgs) -> None:
    """Generate a video from an image (or from text alone), one job or a manifest of many."""
    _run_jobs(job, run)


def _run_jobs(flags: dict, run: RunArgs) -> None:
    """Shared by generate and extend: plan, run with progress, summary, exit code."""
    from fpk.config import load_preset
    from fpk.run import batch
    from fpk.run.jobs import read_manifest
    from fpk.sampling.solvers import Cancelled

    _quiet_libraries()
    p = load_preset(run.preset)
    manifest = run.manifest
    placement = run.placement()
    entries = read_manifest(manifest) if manifest else [{}]
    stop = _StopFlag()
    with _sink(run, batch=manifest is not None) as sink, stop:
        try:
            outcomes = batch.generate(
                p, entries, flags, run.out, manifest=manifest, weights_dir=run.weights,
                device=run.device, dtype=run.dtype, sink=sink, should_stop=stop,
                overwrite=run.overwrite, preview=run.preview, **placement,
            )  # fmt: skip
        except Cancelled:
            typer.echo(
                "fpk: interrupted; finished sections are kept. Run the same command again to "
                "resume.",
                err=True,
            )
            raise typer.Exit(130) from None
    _report(outcomes, run, single=manifest is None, wall=time.perf_counter() - _STARTED,
            loading=getattr(sink, "loading_seconds", None))  # fmt: skip


def _report(outcomes: list, run: RunArgs, single: bool, wall: float, loading) -> None:
    """The end of a run: JSON outcomes, output paths (--quiet), or the summary table and the
    final line; a single job's error as one line. Exits 1 (or the job's code) on failure."""
    failed = [o for o in outcomes if o.status == "failed"]
    if run.as_json:
        for o in outcomes:
            typer.echo(json.dumps(o.as_dict()))
    elif single and failed:
        typer.echo(f"fpk: error: {failed[0].detail}", err=True)
    elif run.quiet:
        for o in outcomes:
            if o.status == "failed":
                typer.echo(f"fpk: error: {o.name}: {o.detail}", err=True)
            else:
                typer.echo(o.detail)
    else:
        from fpk.render import print_final_line, print_summary

        print_summary(outcomes)
        print_final_line(outcomes, wall, loading)
    if failed:
        raise typer.Exit(failed[0].code if single else 1)


def _quiet_libraries() -> None:
    """transformers and diffusers log advice (e.g. about torchvision) that is not the user's
    concern; errors still surface as fpk errors."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    for log in (dlog, tlog):
        log.set_verbosity_error()
        log.disable_progress_bar()


class _StopFlag:
    """Ctrl-C (and each of `signals`) sets a flag the sampler or the training loop checks
    between steps (a second one kills)."""

    def __init__(self, signals: tuple[str, ...] = ("SIGINT",)) -> None:
        self.stopped = False
        self.signals = signals
        self._previous: dict = {}

    def __call__(self) -> bool:
        return self.stopped

    def __enter__(self) -> _StopFlag:
        import signal

        def handler(signum, frame):
            if self.stopped:
                raise KeyboardInterrupt
            self.stopped = True

        for name in self.signals:
            number = getattr(signal, name)
            try:
                self._previous[number] = signal.signal(number, handler)
            except ValueError:  # not the main thread (e.g. inside a test runner thread)
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        for number, previous in self._previous.items():
            signal.signal(number, previous)


class _sink:
    """The event sink for the chosen output: rich progress, JSON lines, or nothing."""

    def __init__(self, run: RunArgs, batch: bool) -> None:
        self.run, self.batch = run, batch
        self.renderer = None

    def __enter__(self):
        if self.run.as_json:
            return lambda e: typer.echo(json.dumps(e.as_dict()))
        if self.run.quiet:
            return lambda e: None
        from fpk.render import ProgressRenderer

        self.renderer = ProgressRenderer(verbose=self.run.verbose, batch=self.batch).__enter__()
        return self.renderer

    def __exit__(self, *exc: object) -> None:
        if self.renderer is not None:
            self.renderer.__exit__(*exc)


@_job_options("extend")
def extend(
    job: dict,
    run: RunArgs,
    video: Annotated[
        Path | None, typer.Argument(help="Clip to continue (omit with --manifest).")
    ] = None,
) -> None:
    """Continue an existing clip forward (or backward with --reverse)."""
    if video is None and run.manifest is None:
        raise UsageError("give the clip to extend (fpk extend CLIP.mp4) or --manifest")
    _run_jobs({**job, "video": video}, run)


def benchmark(
    sampler: Annotated[str, typer.Option("--sampler", help="A sampler name, or 'all'.")] = "all",
    quick: Annotated[bool, _flag("quick", "The short run (under 10 minutes on 2 cores).")] = False,
    part: Annotated[
        list[str] | None,
        typer.Option(
            "--part",
            help="quality, packing, diffusers, section_cost, speed (repeatable; default: all "
            "but speed).",
        ),
    ] = None,
    preset: PresetOpt = DEFAULT_PRESET,
    seeds: Annotated[int, typer.Option("--seeds", help="Held-out scenes per configuration.")] = 3,
    length: Annotated[
        str | None,
        typer.Option(
            "--len", help="Quality part: video length (e.g. 60s; default 20s, --quick 4s)."
        ),
    ] = None,
    window: Annotated[
        list[int] | None,
        typer.Option("--window", help="Quality part: section sizes (repeatable; default 1, 4, 9)."),
    ] = None,
    weights: WeightsOpt = None,
    out: OutOpt = Path("bench"),
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    random_weights: Annotated[
        bool,
        _flag(
            "random-weights",
            "--part speed only: the preset's architecture with random weights (no download).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Measure samplers, drift and cost side by side; writes report.json and PNG plots."""
    from fpk.bench import benchmark as bm
    from fpk.config import load_preset
    from fpk.run.batch import load_runtime

    _quiet_libraries()
    if seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {seeds}")
    from fpk.sampling.timeline import parse_length

    p = load_preset(preset)
    fps = p.sampling.fps
    seconds = parse_length(length, fps) / fps if length else None
    plan = bm.make_plan(sampler, quick, seeds, tuple(part) if part else None, seconds,
                        tuple(window) if window else None)  # fmt: skip
    with _sink(RunArgs(quiet=as_json, as_json=as_json), batch=True) as sink:
        if random_weights:
            if plan.parts != ("speed",):
                raise UsageError("--random-weights measures speed only: add --part speed")
            report = bm.random_speed(p, device, dtype, plan, out, sink)
        else:
            rt = load_runtime(p, weights, device, dtype or "float32")
            report = bm.run(rt, plan, out, sink)
    if as_json:
        typer.echo(json.dumps(report))
        return
    from fpk.render import print_benchmark

    print_benchmark(report, out)


def calibrate(
    preset: PresetOpt = DEFAULT_PRESET,
    weights: WeightsOpt = None,
    device: DeviceOpt = None,
    steps: Annotated[int, typer.Option("--steps", help="Denoising steps to calibrate.")] = 25,
    scenes: Annotated[
        int, typer.Option("--scenes", help="tiny: held-out world scenes to run.")
    ] = 4,
    length: Annotated[str, typer.Option("--len", help="Length of each video.")] = "2s",
    image: Annotated[
        list[Path] | None, typer.Option("--image", help="Start images (other presets).")
    ] = None,
    prompt: Annotated[str, typer.Option("--prompt", help="Their prompt.")] = "",
    out: Annotated[
        Path | None, typer.Option("--out", help="Calibration file (default: the presets').")
    ] = None,
) -> None:
    """Measure a preset's MagCache ratios (for --cache magcache) on real sections."""
    from fpk.bench import calibrate as cal
    from fpk.config import load_preset
    from fpk.model import caching
    from fpk.run.batch import load_runtime
    from fpk.run.jobs import resolve_job

    _quiet_libraries()
    p = load_preset(preset)
    if not 1 <= steps <= 200 or scenes < 1:
        raise UsageError("--steps must be 1..200 and --scenes at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        if image:
            jobs = [resolve_job(p, {"image": str(i), "prompt": prompt, "len": length,
                                    "steps": steps}, {"name": f"c{n}"}, Path(tmp))
                    for n, i in enumerate(image)]  # fmt: skip
        elif p.weights.domain == "fpk-world":
            jobs = cal.world_jobs(p, Path(tmp), scenes, length, steps)
        else:
            raise UsageError(f"fpk calibrate --preset {p.name}: give --image (and --prompt)")
        rt = load_runtime(p, weights, device, None)
        ratios = cal.calibrate(rt, jobs)
    note = f"fpk calibrate --preset {p.name} --steps {steps}: {len(jobs)} videos of {length}"
    caching.save_ratios(p.name, steps, ratios, note, out or caching.CALIBRATION)
    typer.echo(f"{p.name}: {len(ratios)} MagCache ratios in {out or caching.CALIBRATION}")


# `fpk train`'s own options.
ComponentOpt = Annotated[str, typer.Option("--component", help="transformer or vae.")]
StepsOpt = Annotated[int, typer.Option("--steps", help="Total optimiser steps.")]
BatchOpt = Annotated[int, typer.Option("--batch", help="Sections per step.")]
LrOpt = Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW).")]
ScenesOpt = Annotated[
    int, typer.Option("--scenes", help="World videos to train on (seeds 0..N-1).")
]
CheckpointEveryOpt = Annotated[
    int, typer.Option("--checkpoint-every", help="Save a checkpoint every N steps.")
]
SampleEveryOpt = Annotated[
    int, typer.Option("--sample-every", help="Write a sample every N steps (0: never).")
]
ResumeOpt = Annotated[bool, _flag("resume", "Continue from the checkpoint.")]
DecoderOnlyOpt = Annotated[
    bool, _flag("decoder-only", "VAE: train the decoder only (the latents stay as they are).")
]
InflateOpt = Annotated[
    bool,
    _flag(
        "inflate", "VAE: first make its causal convolutions frame-wise (taps summed into the last)."
    ),
]
FirstShareOpt = Annotated[
    float,
    typer.Option(
        "--first-share",
        help="Transformer: share of sections drawn as the inverted order's first (the end "
        "of the video from the start image alone: the goal is only in the prompt).",
    ),
]
ContextNoiseOpt = Annotated[
    float,
    typer.Option(
        "--context-noise",
        help="Transformer or LoRA: noise the history frames a section sees (those inference "
        "generates, not the start image) at a level drawn from 0 to this, so the model does "
        "not take its own slightly wrong frames for the truth (0: clean history).",
    ),
]
MotionLossOpt = Annotated[
    float,
    typer.Option(
        "--motion-loss",
        help="VAE: weight of an L1 loss on frame-to-frame differences (decoded against true), "
        "which sees an object that stutters.",
    ),
]
ContinuousOpt = Annotated[
    int,
    typer.Option(
        "--continuous",
        help="Continuous-motion world scenes (seeds 0..N-1) to train on beside --scenes goal "
        "scenes (the VAE draws them in that proportion, from any frame).",
    ),
]
StartShareOpt = Annotated[
    float,
    typer.Option(
        "--start-share",
        help="Transformer: share of steps trained on text-to-video start frames (the first "
        "frame from the prompt alone).",
    ),
]
ReverseShareOpt = Annotated[
    float,
    typer.Option(
        "--reverse-share",
        help="Transformer: share of sections laid out as fpk extend --reverse lays them out.",
    ),
]
LoraTrainOpt = Annotated[
    bool,
    _flag(
        "lora",
        "Train a LoRA of the transformer on --data (written as RUN/PRESET/lora/"
        "pytorch_lora_weights.safetensors, for --lora).",
    ),
]
DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="LoRA: a folder of clips with captions (clip.mp4 + clip.txt, or a .jsonl file).",
    ),
]
RankOpt = Annotated[int, typer.Option("--rank", help="LoRA: the adapters' rank.")]
LoraLayersOpt = Annotated[
    str,
    typer.Option(
        "--lora-layers",
        help="LoRA: the blocks' layers adapted: all (every Linear) or attention (the "
        "attention projections only, not the MLPs).",
    ),
]
LoraDropoutOpt = Annotated[
    float,
    typer.Option(
        "--lora-dropout",
        help="LoRA: dropout on the adapters' input while training (0: none), against "
        "learning the clips' look along with their motion.",
    ),
]
ShiftCopiesOpt = Annotated[
    int,
    typer.Option(
        "--shift-copies",
        help="LoRA: also train on up to this many translated copies of each clip, shifted "
        "where nothing that moves crosses the frame's edge (0: none).",
    ),
]
CaptionDropoutOpt = Annotated[
    float,
    typer.Option(
        "--caption-dropout",
        help="Share of samples trained on the empty prompt instead of their caption (0: none), "
        "so few clips' looks are not tied to their captions' words.",
    ),
]
RegDataOpt = Annotated[
    Path | None,
    typer.Option(
        "--reg-data",
        help="LoRA: a folder of clips (same layout as --data) of what the base model already "
        "does right, mixed in so the LoRA keeps it (prior preservation).",
    ),
]
RegShareOpt = Annotated[
    float, typer.Option("--reg-share", help="LoRA: share of samples drawn from --reg-data.")
]
TrainSamplerOpt = Annotated[
    str | None,
    typer.Option(
        "--sampler",
        help="Train on sections of this order only, ORDER[:PADDING] (the one you will generate "
        "with, e.g. vanilla); default: the mix of orders one model serves.",
    ),
]
TrainWeightsOpt = Annotated[
    Path | None,
    typer.Option("--weights", help="Components folder (default: the preset's embedded one)."),
]
RunDirOpt = Annotated[Path, typer.Option("--run", help="Folder for checkpoints, log and samples.")]
ThreadsOpt = Annotated[int, typer.Option("--threads", help="CPU threads (0: torch's).")]
TrainSeedOpt = Annotated[int, typer.Option("--seed", help="Random seed of the run.")]
TrainDtypeOpt = Annotated[
    str | None,
    typer.Option(
        "--dtype",
        help="LoRA: the frozen weights' dtype, fp32, bf16 or fp16 (default: bf16 on a GPU, "
        "fp32 on a CPU); the adapters train in fp32. Full training is fp32.",
    ),
]
CheckpointingOpt = Annotated[
    bool,
    typer.Option(
        "--gradient-checkpointing/--no-gradient-checkpointing",
        help="Recompute the blocks' activations in the backward pass: less memory, slower.",
    ),
]


def train(
    preset: PresetOpt = DEFAULT_PRESET,
    component: ComponentOpt = "transformer",
    steps: StepsOpt = 1000,
    batch: BatchOpt = 8,
    lr: LrOpt = 5e-4,
    scenes: ScenesOpt = 400,
    checkpoint_every: CheckpointEveryOpt = 500,
    sample_every: SampleEveryOpt = 0,
    resume: ResumeOpt = False,
    decoder_only: DecoderOnlyOpt = False,
    inflate: InflateOpt = False,
    motion_loss: MotionLossOpt = 0.0,
    first_share: FirstShareOpt = 0.0,
    continuous: ContinuousOpt = 0,
    start_share: StartShareOpt = 0.0,
    reverse_share: ReverseShareOpt = 0.0,
    context_noise: ContextNoiseOpt = 0.0,
    caption_dropout: CaptionDropoutOpt = 0.0,
    lora: LoraTrainOpt = False,
    data: DataOpt = None,
    rank: RankOpt = 16,
    lora_layers: LoraLayersOpt = "all",
    lora_dropout: LoraDropoutOpt = 0.0,
    shift_copies: ShiftCopiesOpt = 0,
    reg_data: RegDataOpt = None,
    reg_share: RegShareOpt = 0.25,
    sampler: TrainSamplerOpt = None,
    weights: TrainWeightsOpt = None,
    run_dir: RunDirOpt = Path("training"),
    threads: ThreadsOpt = 0,
    seed: TrainSeedOpt = TRAIN_SEED,
    device: DeviceOpt = None,
    dtype: TrainDtypeOpt = None,
    gradient_checkpointing: CheckpointingOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a preset's transformer (or VAE) on fpk's synthetic world, or a LoRA on your
    clips (--lora --data FOLDER)."""
    from fpk.config import load_preset
    from fpk.model.loading import EMBEDDED_DIR
    from fpk.render import TrainRenderer
    from fpk.train import training as tr

    _quiet_libraries()
    p = load_preset(preset)
    cfg = tr.TrainConfig(
        steps=steps, batch=batch, lr=lr, scenes=scenes,
        checkpoint_every=checkpoint_every, sample_every=sample_every, seed=seed,
        threads=threads, decoder_only=decoder_only, inflate=inflate, motion_loss=motion_loss,
        first_share=first_share,
        continuous=continuous, start_share=start_share, reverse_share=reverse_share,
        context_noise=context_noise, caption_dropout=caption_dropout, data=data,
        rank=rank, lora_layers=lora_layers, lora_dropout=lora_dropout, shift_copies=shift_copies,
        component="lora" if lora else component,
        sampler=sampler,
        reg_data=reg_data, reg_share=reg_share, device=device, dtype=dtype,
        checkpointing=gradient_checkpointing,
    )  # fmt: skip
    cfg.devices()  # a device that is not here: one line before anything starts
    folder = weights or EMBEDDED_DIR / p.name
    # SIGTERM too: `timeout`, `kill` and batch schedulers stop a background run with it
    with _StopFlag(("SIGINT", "SIGTERM")) as stop, TrainRenderer(quiet, steps) as sink:
        ckpt = tr.train(p, folder, run_dir / p.name, cfg, resume, sink, stop)
    if lora:
        typer.echo(f"checkpoint {ckpt}; LoRA {ckpt.parent / tr.LORA_FILE} (for --lora)")
    else:
        typer.echo(f"checkpoint {ckpt}; weights in {folder}")


# --- registration, in the order people use the commands -----------------------------------

for _name, _fn in (
    ("generate", generate),
    ("extend", extend),
    ("benchmark", benchmark),
    ("calibrate", calibrate),
    ("inspect-context", inspect_context),
    ("check-weights", check_weights),
):
    app.command(_name, epilog=_epilog(_name))(_fn)
app.add_typer(presets_app, name="presets", epilog=_epilog("presets"))
app.command("train", epilog=_epilog("train"))(train)


# --- entry point -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Run the app; an FpkError becomes one line on stderr and its exit code.

    Typer's standalone mode already turns bad options into a usage message and exit code 2.
    """
    try:
        app(args=argv, prog_name="fpk")
    except FpkError as err:
        typer.echo(f"fpk: error: {err}", err=True)
        sys.exit(err.exit_code)


if __name__ == "__main__":  # pragma: no cover
    main()
