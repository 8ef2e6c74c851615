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
    "command", [["benchmark", "--part", "nope"], ["benchmark", "--sampler", "sideways"]]
)
def test_benchmark_bad_input(capsys, command):
    code, _, err = run(capsys, *command)
    _one_line_error(code, err, 2, "unknown")


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
