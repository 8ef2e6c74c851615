"""Rich rendering of reports and (later) progress events. The library never prints."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from fpk.model.accounting import ContextReport, LayoutCount


def _console() -> Console:
    return Console()


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.1f}"


def _kernel(k: tuple[int, int, int]) -> str:
    return "(" + ",".join(map(str, k)) + ")"


def print_context_report(r: ContextReport) -> None:
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
    console.print(_layout_table(r.layout, f"schedule '{r.layout.schedule}'"))
    _print_totals(console, r)
    if r.weights_layout is not None:
        console.print(
            f"\n[yellow]The {r.preset} weights were trained with layout "
            f"'{r.layout_in_use}'; generation uses it:[/]"
        )
        console.print(_layout_table(r.weights_layout, f"layout in use '{r.layout_in_use}'"))
        w = r.weights_layout
        console.print(
            f"input context in use: [bold]{w.input_tokens:,}[/] tokens "
            f"({w.anchor_tokens:,} anchor + {w.history_tokens:,} history) beside the bound "
            f"{_fmt(r.converged_input_context)}"
        )


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
    for col in ("name", "label", "resolution", "schedule", "description"):
        table.add_column(col)
    for p in presets:
        table.add_row(p.name, p.label, str(p.sampling.resolution), p.schedule.name, p.description)
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
    console.print(
        f"schedule '{sched['name']}': tail {sched['tail']}, fill {sched['fill']}, "
        f"lambda {sched['ratio']}"
    )
    for lv in sched["levels"]:
        console.print(f"  {lv['frames']} frame(s) at {_kernel(lv['kernel'])}")


# --- progress of generate / extend -------------------------------------------------------


class ProgressRenderer:
    """Renders fpk.events with rich: a bar per job and per section (steps, s/step, ETA) and
    a line per section with its place in the order and the tokens of its context."""

    def __init__(self, console: Console | None = None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.job_task = None
        self.section_task = None
        self._t = 0.0

    def __enter__(self) -> ProgressRenderer:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, event: Any) -> None:
        import time

        from fpk import events as ev

        p = self.progress
        if isinstance(event, ev.JobStarted):
            self._reset()
            resumed = f", resuming {event.resumed_sections} done" if event.resumed_sections else ""
            self.job_task = p.add_task(
                f"[bold]{event.job}[/] job {event.index}/{event.total}: {event.frames} frames, "
                f"{event.sampler}{resumed}",
                total=event.sections,
                rate="",
            )
        elif isinstance(event, ev.SectionStarted):
            ctx = " + ".join(f"{k} {n:,}" for k, n in event.context)
            p.console.print(
                f"  section {event.section + 1}/{event.sections} (order {event.order + 1}), "
                f"RoPE t {event.positions[0]}..{event.positions[1]}: context {ctx} = "
                f"{event.context_tokens:,} + {event.target_tokens:,} target tokens"
            )
            if self.section_task is not None:
                p.remove_task(self.section_task)
            self.section_task = p.add_task(f"  section {event.section + 1}", total=None, rate="")
            self._t = time.perf_counter()
        elif isinstance(event, ev.StepDone) and self.section_task is not None:
            rate = (time.perf_counter() - self._t) / event.step
            p.update(self.section_task, total=event.steps, completed=event.step,
                     rate=f"{rate:.2f} s/step")  # fmt: skip
        elif isinstance(event, ev.SectionDone) and self.job_task is not None:
            p.advance(self.job_task)
        elif isinstance(event, ev.JobDone):
            self._reset()
            p.console.print(f"[green]done[/] {event.path} ({event.frames} frames, "
                            f"{event.seconds:.1f} s)")  # fmt: skip
        elif isinstance(event, ev.JobSkipped):
            p.console.print(f"[cyan]skipped[/] {event.job}: {event.reason} ({event.path})")
        elif isinstance(event, ev.JobFailed):
            self._reset()
            p.console.print(f"[red]failed[/] {event.job}: {event.error}")
        elif isinstance(event, ev.Message):
            p.console.print(event.text)

    def _reset(self) -> None:
        for task in (self.section_task, self.job_task):
            if task is not None:
                self.progress.remove_task(task)
        self.section_task = self.job_task = None


def print_summary(outcomes: list[Any], console: Console | None = None) -> None:
    """A table of every job's outcome."""
    table = Table(title="summary", title_justify="left")
    for col in ("job", "status", "seconds", "output or error"):
        table.add_column(col, overflow="fold")
    colour = {"done": "green", "skipped": "cyan", "failed": "red"}
    for o in outcomes:
        detail = "see below" if o.status == "failed" else o.detail
        table.add_row(o.name, f"[{colour[o.status]}]{o.status}[/]", f"{o.seconds:.1f}", detail)
    console = console or Console(stderr=True)
    console.print(table)
    for o in outcomes:  # whole lines, so that errors can be read and copied
        if o.status == "failed":
            console.print(f"failed {o.name}: {o.detail}", soft_wrap=True, markup=False)


def print_benchmark(report: dict[str, Any], out: Any) -> None:
    """Tables of a benchmark report: quality and drift per sampler, wins, cost, diffusers."""
    console = Console()
    if "quality" in report:
        q = report["quality"]["summary"]
        table = Table(title="quality against ground truth (mean ± std; drift = last 15% - first)")
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
        )
    console.print(
        f"report: {out}/report.json; plots: {', '.join(report.get('plots', []))}; "
        f"{report['seconds']:.0f} s, peak RSS {report['peak_rss_mb']:.0f} MB"
    )


class TrainRenderer:
    """`fpk train`'s progress: one bar with loss and learning rate (nothing when quiet)."""

    def __init__(self, quiet: bool, steps: int) -> None:
        self.quiet, self.steps, self.progress = quiet, steps, None

    def __enter__(self):
        if self.quiet:
            return lambda e: None
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

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
