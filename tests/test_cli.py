"""The CLI: inspect-context figures of the seed, presets, errors as one line and an exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fpk.cli import main

BASE = (Path(__file__).resolve().parents[1] / "presets" / "base.toml").read_text()


def run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    out, err = capsys.readouterr()
    return exit_.value.code or 0, out, err


def inspect_json(capsys, *args: str) -> dict:
    code, out, err = run(capsys, "inspect-context", "--json", *args)
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize(
    "preset, lf, bound, params",
    [("base", 1560, 3120, 12.9e9), ("lite", 1040, 2080, 7.06e9), ("extended", 1950, 3900, 20.06e9)],
)
def test_seed_figures(capsys, preset, lf, bound, params):
    r = inspect_json(capsys, "--preset", preset)
    assert r["per_frame_tokens"] == lf
    assert r["converged_input_context"] == bound
    assert r["parameters"] == pytest.approx(params, rel=0.01)


def test_base_released_layout_in_use(capsys):
    r = inspect_json(capsys, "--preset", "base")
    assert r["layout_in_use"] == "released"
    assert r["weights_layout"]["input_tokens"] == 3926  # 2x1560 + 390 + 416
    assert r["parameters"] == 12_874_314_816  # the released model's count


@pytest.mark.parametrize("history", [1, 10, 100, 10000])
def test_base_history_stays_within_bound(capsys, history):
    r = inspect_json(capsys, "--preset", "base", "--history-frames", str(history))
    layout = r["layout"]
    assert layout["history_tokens"] <= r["converged_input_context"] + layout["padding_tokens"]
    assert layout["history_exact_tokens"] <= r["converged_input_context"]


def test_overrides(capsys):
    r = inspect_json(
        capsys,
        "--preset",
        "base",
        "--resolution",
        "512x512",
        "--window",
        "4",
        "--history-frames",
        "3",
        "--schedule",
        "duplicated",
    )
    assert r["per_frame_tokens"] == 32 * 32
    assert r["predicted_tokens"] == 4 * 1024
    assert r["layout"]["schedule"] == "duplicated"
    assert r["layout"]["history_tokens"] == 1024 + 2 * 256


def test_presets_list_and_show(capsys):
    code, out, _ = run(capsys, "presets", "list", "--json")
    assert code == 0 and [p["name"] for p in json.loads(out)] == [
        "base",
        "extended",
        "lite",
        "tiny",
    ]
    code, out, _ = run(capsys, "presets", "show", "lite", "--json")
    assert code == 0 and json.loads(out)["sampling"]["resolution"] == "640x416"
    code, out, _ = run(capsys, "presets", "show", "base")
    assert code == 0 and "released" in out


def _one_line_error(code: int, err: str, expected_code: int, needle: str) -> None:
    assert code == expected_code
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], err


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--resolution", "830x480"], "not divisible by 16"),
        (["--resolution", "0x480"], "must be positive"),
        (["--window", "0"], "--window must be positive"[:8]),
        (["--history-frames", "-1"], "--history-frames"),
        (["--schedule", "nope"], "unknown schedule 'nope'"),
        (["--preset", "tiny", "--resolution", "16x16"], "larger than the latent frame"),
    ],
)
def test_bad_input_one_line_exit_2(capsys, args, needle):
    code, _, err = run(capsys, "inspect-context", "--preset", "base", *args)  # last one wins
    _one_line_error(code, err, 2, needle)


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda s: s.replace('name = "base"', 'name = "base'), "malformed TOML"),
        (lambda s: s.replace("[vae]", "colour = 3\n[vae]"), "unknown key 'colour'"),
        (lambda s: s.replace("patch_size = 2", "patch_size = 0"), "must be positive"),
    ],
)
def test_bad_preset_file_one_line_exit_2(capsys, tmp_path, edit, needle):
    path = tmp_path / "bad.toml"
    path.write_text(edit(BASE))
    code, _, err = run(capsys, "inspect-context", "--preset", str(path))
    _one_line_error(code, err, 2, needle)
    assert "bad.toml" in err


@pytest.mark.parametrize(
    ("command", "needle"),
    [
        (["benchmark", "--part", "nope"], "unknown --part"),
        (["benchmark", "--sampler", "sideways"], "unknown sampler"),
        (["benchmark", "--window", "0"], "--window 0"),
        (["benchmark", "--len", "soon"], "--len 'soon'"),
    ],
)
def test_benchmark_bad_input(capsys, command, needle):
    code, _, err = run(capsys, *command)
    _one_line_error(code, err, 2, needle)


@pytest.mark.parametrize(
    ("command", "needle"),
    [
        (["train", "--dtype", "bf16"], "--dtype bf16 applies to --lora"),
        (["train", "--lora", "--data", ".", "--dtype", "fp8"], "--dtype 'fp8' is not one of"),
        (["train", "--device", "nowhere"], "--device 'nowhere' is not a device"),
    ],
)
def test_train_bad_device_or_dtype(capsys, tmp_path, command, needle):
    code, _, err = run(capsys, *command, "--run", str(tmp_path))
    _one_line_error(code, err, 2, needle)
    assert not any(tmp_path.iterdir())  # refused before anything is written


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from fpk.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert not e.code\n"
        "assert 'torch' not in sys.modules, 'fpk --help imported torch'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "inspect-context" in done.stdout


# --- first contact (issue 17): help, defaults, messages, progress -------------------------

from typer.testing import CliRunner  # noqa: E402

from fpk.cli import EXAMPLES, app  # noqa: E402

COMMANDS = ["generate", "extend", "benchmark", "inspect-context", "check-weights", "train"]


def invoke(*args: str, **env: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "100", **env})


def _words(text: str) -> str:
    """Help text without its box and wrapping: words separated by one space."""
    import re

    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def test_help_shows_every_default_and_on_off_flags():
    raw = invoke("generate", "--help").output
    text = _words(raw)
    assert "tiny 5, base 9" in text  # --window: the preset's, read from each preset
    for default in ("default 5s", "default 31337", "default 1.0", "default released"):
        assert default in text, default
    assert "bf16 on a GPU, fp32 on a CPU" in text  # --dtype
    assert "auto: the fastest that fits --vram" in text  # --offload
    assert "bucket nearest the input's" in text  # --resolution
    for flag in ("overwrite", "quiet", "json", "preview"):
        line = next(ln for ln in raw.splitlines() if f"--{flag} " in ln)
        assert f"--no-{flag}" in line and "<bool>" not in line, line
    assert "[default: tiny]" in text


@pytest.mark.parametrize("command", COMMANDS + ["presets"])
def test_every_command_has_an_example(command):
    text = _words(invoke(command, "--help").output)
    assert "Example:" in text
    assert EXAMPLES[command].split()[1] in text  # e.g. "generate"


def test_commands_listed_by_use_and_version():
    text = invoke("--help").output
    places = [text.index(f" {c} ") for c in COMMANDS]
    assert places == sorted(places)
    result = invoke("--version")
    from fpk import __version__

    assert result.exit_code == 0 and result.output.strip() == f"fpk {__version__}"
    assert "--install-completion" in text


def test_one_default_preset_for_every_command():
    import typer

    from fpk.config import DEFAULT_PRESET

    group = typer.main.get_command(app)
    for name in COMMANDS:
        (preset,) = [p for p in group.commands[name].params if p.name == "preset"]
        assert preset.default == DEFAULT_PRESET, name


@pytest.mark.parametrize("preset", ["base", "lite", "extended", "tiny"])
def test_presets_and_inspect_context_agree_on_the_layout(capsys, preset):
    code, out, _ = run(capsys, "presets", "list", "--json")
    listed = {p["name"]: p for p in json.loads(out)}[preset]
    shown = json.loads(run(capsys, "presets", "show", preset, "--json")[1])
    report = inspect_json(capsys, "--preset", preset)
    assert listed["layout_in_use"] == shown["layout_in_use"] == report["layout_in_use"]
    text = invoke("inspect-context", "--preset", preset).output
    first_table = next(ln for ln in text.splitlines() if "schedule '" in ln or "layout in" in ln)
    assert f"'{report['layout_in_use']}'" in first_table  # the layout in use comes first


def test_missing_base_weights_name_every_repo_with_size_and_exit_2(capsys, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    code, _, err = run(capsys, "check-weights", "--preset", "base")
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert "3 of 3 repos missing" in lines[0]
    repos = ("lllyasviel/FramePackI2V_HY", "hunyuanvideo-community/HunyuanVideo",
             "lllyasviel/flux_redux_bfl")  # fmt: skip
    for repo in repos:
        (line,) = [ln for ln in lines[1:] if f"hf download {repo}" in ln]
        assert " GB" in line
    assert len(lines) == 4


def test_summary_in_given_order_each_error_once():
    from rich.console import Console

    from fpk.render import print_final_line, print_summary
    from fpk.run.batch import Outcome

    outcomes = [
        Outcome("one", "done", "out/one.mp4", 1.0, 0, 30, "64x64", "out/one.json"),
        Outcome("two", "failed", "two.png: no such file; check the path", 0.0, 2),
        Outcome("three", "skipped", "out/three.mp4"),
    ]
    console = Console(record=True, width=100)
    print_summary(outcomes, console)
    print_final_line(outcomes, 12.34, 3.2, console)
    text = console.export_text()
    assert text.index("one") < text.index("two") < text.index("three")
    assert text.count("no such file") == 1 and "see below" not in text
    assert "1 done, 1 skipped, 1 failed: 12.3 s wall, models 3.2 s" in text


def test_single_job_final_line():
    from rich.console import Console

    from fpk.render import print_final_line
    from fpk.run.batch import Outcome

    console = Console(record=True, width=200)
    done = Outcome("demo", "done", "out/demo.mp4", 8.3, 0, 150, "64x64", "out/demo.json")
    print_final_line([done], 15.5, 5.1, console)
    assert console.export_text().strip() == (
        "done out/demo.mp4: 150 frames, 64x64, 15.5 s wall, models 5.1 s; sidecar out/demo.json"
    )


def _section(section: int, order: int, positions: tuple[int, int]):
    from fpk import events as ev

    groups = (("(1,2,2)", 1560), ("(2,4,4)", 390), ("(4,8,8)", 416), ("anchor", 1560))
    return ev.SectionStarted("a-long-job-name", order, section, 600, positions, groups, 3926,
                             14040)  # fmt: skip


def test_section_lines_fit_100_columns_and_name_the_padding():
    from fpk.render import section_line

    seen: dict = {}
    lines = []
    for order, section in enumerate(range(599, -1, -1)):  # inverted: the end first
        e = _section(section, order, (1 + 9 * min(section, 3), 9 + 9 * min(section, 3)))
        lines.append(section_line(e, seen, "released"))
        seen.setdefault(tuple(e.positions), e.section)
    assert max(map(len, lines)) < 100
    assert "released padding" not in lines[0]
    assert "t 28..36, as in 600 (released padding)" in lines[1]
    assert lines[0].startswith("  section 600/600 (order 1)")


def test_progress_renders_loading_and_verbose_context():
    from rich.console import Console

    from fpk import events as ev
    from fpk.render import ProgressRenderer

    console = Console(record=True, width=100)
    with ProgressRenderer(console, verbose=True) as r:
        r(ev.Loading("", "transformer", "/weights/tiny/transformer"))
        r(ev.Loaded("", 2.5))
        r(ev.JobStarted("a-long-job-name", 1, 1, 150, 600, 25, "inverted", 0, "released"))
        r(_section(59, 0, (28, 36)))
    text = console.export_text()
    assert "models loaded in 2.5 s" in text
    assert "context (1,2,2) 1,560 + (2,4,4) 390" in text  # -v: group by group
    assert "checking jobs" not in text  # the spinner goes when it is done


def test_train_progress_is_plain_lines_in_a_log(capsys):
    """Where the output is not a terminal (a run in the background writing to a file), `fpk
    train` prints a line every hundredth of its steps and at the last, not a bar."""
    from fpk.render import TrainRenderer
    from fpk.train.config import TrainProgress

    with TrainRenderer(quiet=False, steps=250) as sink:
        for step in range(1, 251):
            sink(TrainProgress("train", step, 250, 0.5 / step, 1e-4, step * 0.9))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 125 and lines[0] == "step 2/250 loss 0.2500 lr 1.00e-04 0:00:02"
    assert lines[-1] == "step 250/250 loss 0.0020 lr 1.00e-04 0:03:45"
    with TrainRenderer(quiet=True, steps=250) as sink:
        sink(TrainProgress("train", 250, 250, 0.1, 1e-4, 1.0))
    assert capsys.readouterr().out == ""
