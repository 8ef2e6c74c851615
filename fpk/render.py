"""Rich rendering of reports and (later) progress events. The library never prints."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import TaskID
from rich.table import Table
from rich.text import Text

from fpk.model.accounting import ContextReport, LayoutCount


def _console() -> Console:
    return Console()


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.1f}"


def _kernel(k: tuple[int, int, int]) -> str:
    return "(" + ",".join(map(str, k)) + ")"


def print_context_report(r: ContextReport) -> None:
    """The layout generation runs first; where the weights run another layout than the
    preset's schedule (base: "released"), the schedule's table and bound follow it."""
    console = _console()
    params = (
        f"{r.parameters / 1e9:.2f}B" if r.parameters and r.parameters > 1e8 else f"{r.parameters:,}"
    )
    console.print(
        f"[bold]{r.preset}[/] ({r.label}, {params} parameters)  {r.resolution} -> latent "
        f"{r.latent_width}x{r.latent_height}, patch {_kernel(r.patch_kernel)}"
    )
    console.print(
        f"per-frame tokens Lf = {r.per_frame_tokens:,}   window S = {r.window} "
        f"({r.predicted_tokens:,} predicted tokens)   history T = {r.history_frames:,} frames"
    )
    w = r.weights_layout
    if w is not None:
        console.print(_layout_table(w, f"layout in use '{r.layout_in_use}' (the weights')"))
        console.print(
            f"input context in use: [bold]{w.input_tokens:,}[/] tokens "
            f"({w.anchor_tokens:,} anchor + {w.history_tokens:,} history); section total "
            f"{r.predicted_tokens + w.input_tokens:,} tokens"
        )
        console.print(
            f"\n[dim]The preset's schedule '{r.layout.schedule}', not what these weights run "
            "(the seed's formulas):[/]"
        )
    console.print(_layout_table(r.layout, f"schedule '{r.layout.schedule}'"))
    _print_totals(console, r)


def _layout_table(layout: LayoutCount, title: str) -> Table:
    table = Table(title=f"{title}: {layout.description}", title_justify="left")
    for col in ("level", "role", "kernel", "frames", "positions", "groups", "tokens", "padding"):
        table.add_column(col, justify="right" if col not in ("role", "kernel") else "left")
    for row in layout.levels:
        pos = "" if row.first_position is None else f"{row.first_position}..{row.last_position}"
        frames = f"{row.frames:,}" + (f" ({row.zero_frames} zero)" if row.zero_frames else "")
        table.add_row(
            str(row.level),
            row.role,
            _kernel(row.kernel),
            frames,
            pos,
            f"{row.groups:,}",
            f"{row.tokens:,}",
            _fmt(row.padding),
        )
    return table


def _print_totals(console: Console, r: ContextReport) -> None:
    lay = r.layout
    bound = "unbounded (append tail)" if lay.schedule_bound is None else f"{lay.schedule_bound:,}"
    console.print(
        f"anchor frames: {r.anchor_frames} x {_kernel(r.patch_kernel)} = "
        f"{lay.anchor_tokens:,} tokens\n"
        f"packed history: [bold]{lay.history_tokens:,}[/] tokens "
        f"(exact {_fmt(lay.history_exact_tokens)} + padding {_fmt(lay.padding_tokens)}); "
        f"{lay.dropped_frames:,} frames dropped by the tail rule '{lay.tail}'\n"
        f"closed form Lf(1-1/l^T)/(1-1/l), l = {r.ratio:g}: {_fmt(r.closed_form_history)}   "
        f"geometric: {'yes' if lay.geometric else 'no'}\n"
        f"converged input context Lf*l/(l-1): [bold]{_fmt(r.converged_input_context)}[/]   "
        f"schedule's own maximum: {bound}\n"
        f"section total: {r.predicted_tokens:,} predicted + {lay.input_tokens:,} input = "
        f"[bold]{r.total_tokens:,}[/] tokens"
    )


def print_presets(presets: list[Any]) -> None:
    table = Table(title="presets")
    for col in ("name", "label", "resolution", "layout in use", "description"):
        table.add_column(col)
    for p in presets:
        table.add_row(p.name, p.label, str(p.sampling.resolution), p.layout_in_use, p.description)
    _console().print(table)


def print_preset(data: dict[str, Any]) -> None:
    console = _console()
    console.print(f"[bold]{data['name']}[/] ({data['label']}): {data['description']}")
    for section in ("architecture", "vae", "sampling", "weights"):
        table = Table(title=section, title_justify="left", show_header=False)
        for key, value in data[section].items():
            table.add_row(key, str(value))
        console.print(table)
    sched = data["schedule"]
    console.print(f"layout in use: [bold]{data['layout_in_use']}[/]")
    console.print(
        f"the preset's schedule '{sched['name']}': tail {sched['tail']}, fill {sched['fill']}, "
        f"lambda {sched['ratio']}"
    )
    for lv in sched["levels"]:
        console.print(f"  {lv['frames']} frame(s) at {_kernel(lv['kernel'])}")


# --- progress of generate / extend -------------------------------------------------------


class ProgressRenderer:
    """Renders fpk.events with rich: a spinner while models load, a bar per job and per
    section (steps, s/step, ETA), and a line per section (under 100 columns; `verbose` adds
    the packed context group by group). In a `batch`, a failed job gets a line here and its
    error in the summary."""

    def __init__(self, console: Console | None = None, verbose: bool = False,
                 batch: bool = False) -> None:  # fmt: skip
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = console or Console(stderr=True)
        self.verbose, self.batch = verbose, batch
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.load_task: TaskID | None = None
        self.loading_seconds: float | None = None
        self.jobs: dict[str, _JobView] = {}  # running jobs (several at once on Ray workers)

    def __enter__(self) -> ProgressRenderer:
        self.progress.start()
        self.load_task = self.progress.add_task("checking jobs and weights", total=None, rate="")
        return self

    def __exit__(self, *exc: object) -> None:
        for name in list(self.jobs):
            self._end(name)
        self._end_loading()
        self.progress.stop()

    def __call__(self, event: Any) -> None:
        from fpk import events as ev

        handler = {
            ev.WorkerStarted: lambda e: self._print(
                e, f"worker {e.worker} on {e.host}, pid {e.pid}"
            ),
            ev.Loading: self._loading,
            ev.Loaded: self._loaded,
            ev.JobStarted: self._job_started,
            ev.SectionStarted: self._section_started,
            ev.StepDone: self._step_done,
            ev.SectionDone: self._section_done,
            ev.JobDone: self._job_done,
            ev.JobSkipped: self._job_skipped,
            ev.JobFailed: self._job_failed,
            ev.Message: lambda e: self._print(e, e.text),
        }.get(type(event))
        if handler is not None:
            handler(event)

    def _print(self, e: Any, text: str) -> None:
        """A line, with the Ray worker that sent `e` in front where one did."""
        from rich.markup import escape

        from fpk.events import worker_of

        worker = worker_of(e)
        line = f"{escape(f'[{worker}]')} {text}" if worker else text
        self.progress.console.print(line, highlight=False)

    def _loading(self, e: Any) -> None:
        text = f"loading {e.component} from {_short_path(e.source)}"
        if self.load_task is None:
            self.load_task = self.progress.add_task(text, total=None, rate="")
        else:
            self.progress.update(self.load_task, description=text)

    def _loaded(self, e: Any) -> None:
        self.loading_seconds = e.seconds
        self._end_loading()
        self._print(e, f"models loaded in {e.seconds:.1f} s")

    def _end_loading(self) -> None:
        if self.load_task is not None:
            self.progress.remove_task(self.load_task)
            self.load_task = None

    def _job_started(self, e: Any) -> None:
        self._end_loading()
        self._end(e.job)
        resumed = f", resuming {e.resumed_sections} done" if e.resumed_sections else ""
        task = self.progress.add_task(
            f"[bold]{e.job}[/] {e.index}/{e.total}: {e.frames} frames, {e.sampler}{resumed}",
            total=e.sections,
            rate="",
        )
        self.jobs[e.job] = _JobView(task, e.padding)

    def _section_started(self, e: Any) -> None:
        import time

        view = self.jobs.get(e.job)
        if view is None:
            return
        self._print(e, section_line(e, view.seen, view.padding))
        if self.verbose:
            groups = " + ".join(f"{k} {n:,}" for k, n in e.context)
            self._print(e, f"    context {groups}")
        view.seen.setdefault(tuple(e.positions), e.section)
        if view.section_task is not None:
            self.progress.remove_task(view.section_task)
        label = f"  section {e.section + 1}/{e.sections}"
        view.section_task = self.progress.add_task(label, total=None, rate="")
        view.started = time.perf_counter()

    def _step_done(self, e: Any) -> None:
        import time

        view = self.jobs.get(e.job)
        if view is None or view.section_task is None:
            return
        rate = (time.perf_counter() - view.started) / e.step
        self.progress.update(view.section_task, total=e.steps, completed=e.step,
                             rate=f"{rate:.2f} s/step")  # fmt: skip

    def _section_done(self, e: Any) -> None:
        view = self.jobs.get(e.job)
        if view is not None:
            self.progress.advance(view.job_task)

    def _job_done(self, e: Any) -> None:
        self._end(e.job)
        size = f", {e.resolution}" if e.resolution else ""
        self._print(e, f"[green]done[/] {e.path} ({e.frames} frames{size}, {e.seconds:.1f} s)")

    def _job_skipped(self, e: Any) -> None:
        self._print(e, f"[cyan]skipped[/] {e.job}: {e.reason} ({e.path})")

    def _job_failed(self, e: Any) -> None:
        self._end(e.job)
        if self.batch:  # the error itself is in the summary, once
            self._print(e, f"[red]failed[/] {e.job}")

    def _end(self, job: str) -> None:
        view = self.jobs.pop(job, None)
        if view is None:
            return
        for task in (view.section_task, view.job_task):
            if task is not None:
                self.progress.remove_task(task)


@dataclass
class _JobView:
    """A running job's bars, and the RoPE positions its sections had (to name repeats)."""

    job_task: Any
    padding: str
    section_task: Any = None
    started: float = 0.0
    seen: dict[tuple[int, int], int] = field(default_factory=dict)


def section_line(e: Any, seen: dict[tuple[int, int], int], padding: str) -> str:
    """One section's line (< 100 columns): its place in time and in the order, its RoPE
    positions (naming the padding rule where an earlier section had the same), its tokens."""
    first, last = e.positions
    where = f"t {first}..{last}"
    again = seen.get((first, last))
    if again is not None:
        rule = f"{padding} padding" if padding else "padding"
        where += f", as in {again + 1} ({rule})"
    return (
        f"  section {e.section + 1}/{e.sections} (order {e.order + 1}) {where}: "
        f"{e.context_tokens:,} ctx + {e.target_tokens:,} new tokens"
    )


def _short_path(path: str, keep: int = 48) -> str:
    return path if len(path) <= keep else "..." + path[-(keep - 3) :]


def print_summary(outcomes: list[Any], console: Console | None = None) -> None:
    """A table of every job's outcome, in manifest order; each error once, whole."""
    table = Table(title="summary", title_justify="left")
    for col in ("job", "status", "seconds", "frames", "size", "output or error"):
        table.add_column(col, overflow="fold")
    colour = {"done": "green", "skipped": "cyan", "failed": "red"}
    for o in outcomes:
        frames = str(o.frames) if o.frames else ""
        table.add_row(o.name, f"[{colour[o.status]}]{o.status}[/]", f"{o.seconds:.1f}", frames,
                      o.resolution, Text(o.detail))  # fmt: skip
    console = console or Console(stderr=True)
    console.print(table)


def print_final_line(
    outcomes: list[Any], wall: float, loading: float | None, console: Console | None = None
) -> None:
    """The last line of a run: a single job's output, frames, size, wall time (models
    loading included) and sidecar; for a batch, the counts and the wall time."""
    console = console or Console(stderr=True)
    models = f", models {loading:.1f} s" if loading is not None else ""
    if len(outcomes) == 1 and outcomes[0].status != "failed":
        o = outcomes[0]
        what = f"{o.frames} frames, {o.resolution}, " if o.frames else ""
        side = f"; sidecar {o.sidecar}" if o.sidecar else ""
        console.print(f"{o.status} {o.detail}: {what}{wall:.1f} s wall{models}{side}",
                      highlight=False, soft_wrap=True)  # fmt: skip
        return
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    console.print(
        f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed: "
        f"{wall:.1f} s wall{models}",
        highlight=False,
    )


def print_benchmark(report: dict[str, Any], out: Any) -> None:
    """Tables of a benchmark report: quality and drift per sampler, wins, cost, diffusers."""
    console = Console()
    if "speed" in report:
        sp = report["speed"]
        table = Table(title=f"speed: {sp['preset']} at {sp['resolution']}, {sp['device']}, "
                      f"{sp['dtype']}, {sp['tokens']:,} tokens a step")  # fmt: skip
        for col in ("config", "s/step", "s/frame", "TFLOP/s", "peak VRAM GB", "forwards"):
            table.add_column(col, justify="right" if col != "config" else "left")
        for r in sp["rows"]:
            vram = "-" if r["peak_vram_gb"] is None else f"{r['peak_vram_gb']:.2f}"
            table.add_row(r["config"], f"{r['s_per_step']:.4f}", f"{r['s_per_frame']:.4f}",
                          f"{r['tflops']:.3f}", vram, str(r.get("forwards", "")))  # fmt: skip
        console.print(table)
    if "quality" in report:
        q = report["quality"]["summary"]
        table = Table(
            title="quality against ground truth (mean ± std over seeds; drift = the last 10 s "
            "minus the first, thirds of shorter videos)"
        )
        table.add_column("metric")
        samplers = report["plan"]["samplers"]
        for s in samplers:
            table.add_column(s, justify="right")
        for m in ("psnr", "ssim", "position_error", "colour_error", "sharpness"):
            table.add_row(m, *[f"{q[s][m]['mean']:.2f}±{q[s][m]['std']:.2f}" for s in samplers])
            table.add_row("  drift", *[f"{q[s][m]['drift']:+.2f}" for s in samplers])
        console.print(table)
        w = q["wins"]
        console.print(
            "metrics won (best mean / least drift): "
            + ", ".join(f"{s} {w[s]['best_mean']}/{w[s]['least_drift']}" for s in samplers)
        )
        for s, v in q.get("versus_vanilla", {}).items():
            g = v["psnr"]
            console.print(
                f"PSNR drift of {s} against vanilla on the same scenes: {g['gain']:+.2f} ± "
                f"{g['sem']:.2f} dB (standard error; pairs' std {g['std']:.2f}), "
                f"less drift in {g['better']}/{g['pairs']}"
            )
    if "packing" in report:
        table = Table(title="cost per section as the video grows (one denoising step)")
        for col in ("method", "sections", "s/step first", "s/step last", "tokens last", "note"):
            table.add_column(col)
        for name, data in report["packing"]["cost"].items():
            rows = data["rows"]
            table.add_row(
                name,
                f"{rows[0]['section']}..{rows[-1]['section']}",
                f"{rows[0]['seconds']:.3f}",
                f"{rows[-1]['seconds']:.3f}",
                f"{rows[-1]['tokens']:,}",
                data["stopped"] or "",
            )
        console.print(table)
        for name, data in report["packing"]["identity"].items():
            last = data["last_second"]
            console.print(
                f"identity in the last second, {name}: colour error "
                f"{last['colour_error']:.1f}, position error {last['position_error']:.1f} px"
            )
    if "section_cost" in report:
        console.print(
            "section cost (s/step): "
            + ", ".join(f"section {k}: {v:.3f}" for k, v in report["section_cost"].items())
        )
    if "diffusers" in report:
        d = report["diffusers"]
        console.print(
            f"against diffusers' pipeline: fpk {d['fpk_seconds']:.2f} s, diffusers "
            f"{d['diffusers_seconds']:.2f} s (median of {d['runs']}): "
            f"[bold]{d['speedup']:.2f}x[/]"
            + (
                f"; {d['speedup_same_vae']:.2f}x with diffusers on fpk's VAE set-up"
                if "speedup_same_vae" in d
                else ""
            )
            + (
                f"; {d['speedup_frames']:.2f}x against diffusers' frames without its mp4"
                if "speedup_frames" in d
                else ""
            )
        )
    console.print(
        f"report: {out}/report.json; plots: {', '.join(report.get('plots', []))}; "
        f"{report['seconds']:.0f} s, peak RSS {report['peak_rss_mb']:.0f} MB"
    )


class TrainRenderer:
    """`fpk train`'s progress: one bar with loss and learning rate on a terminal; where the
    output is a file or a pipe (a run in the background), a plain line every LINES-th of the
    steps and at the last, which a log keeps and `tail` reads; nothing when quiet."""

    LINES = 100  # plain lines over a whole run

    def __init__(self, quiet: bool, steps: int) -> None:
        self.quiet, self.steps, self.progress = quiet, steps, None

    def __enter__(self):
        if self.quiet:
            return lambda e: None
        console = _console()
        if not console.is_terminal:
            return self._lines(console)
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f} lr {task.fields[lr]:.2e}"),
            TimeElapsedColumn(), TimeRemainingColumn(),
        )  # fmt: skip
        self.progress.start()
        task = self.progress.add_task("train", total=self.steps, loss=0.0, lr=0.0)

        def sink(e):
            self.progress.update(task, completed=e.step, loss=e.loss, lr=e.lr)

        return sink

    def _lines(self, console):
        every = max(1, self.steps // self.LINES)

        def sink(e):
            if e.step % every == 0 or e.step == e.steps:
                elapsed = datetime.timedelta(seconds=round(e.seconds))
                console.print(
                    f"step {e.step}/{e.steps} loss {e.loss:.4f} lr {e.lr:.2e} {elapsed}",
                    highlight=False, soft_wrap=True,
                )  # fmt: skip

        return sink

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
