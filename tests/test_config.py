"""Presets and schedules read from TOML: values, and errors that name key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from fpk.config import get_schedule, load_preset, parse_resolution, preset_names, schedules
from fpk.errors import ConfigError, PackingError

BASE = (Path(__file__).resolve().parents[1] / "presets" / "base.toml").read_text()


def test_all_presets_load_with_defaults():
    assert preset_names() == ["base", "extended", "lite", "tiny"]
    for name in preset_names():
        p = load_preset(name)
        s = p.sampling
        window = 5 if name == "tiny" else 9  # the CPU model: smaller sections, cheaper steps
        assert (s.window, s.steps, s.guidance, s.cfg, s.fps, s.crf) == (
            window,
            25,
            10.0,
            1.0,
            30,
            16,
        )
        assert p.schedule.independent


def test_base_preset_is_the_seed_config():
    p = load_preset("base")
    assert str(p.sampling.resolution) == "832x480"
    assert [lv.kernel for lv in p.schedule.levels] == [
        (1, 2, 2),
        (1, 4, 2),
        (1, 4, 4),
        (1, 8, 4),
        (1, 8, 8),
    ]
    assert p.sampling.sampler == "inverted" and p.schedule.ratio == 2
    assert p.weights.trained_schedule == "released"
    released = get_schedule("released")
    assert [(lv.kernel, lv.frames) for lv in released.levels] == [
        ((1, 2, 2), 1),
        ((2, 4, 4), 2),
        ((4, 8, 8), 16),
    ]
    assert released.fill == "zeros"


def test_named_schedules():
    assert set(schedules()) >= {"released", "geometric", "duplicated", "temporal"}


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mine.toml"
    path.write_text(text)
    return str(path)


def test_user_preset_file(tmp_path):
    p = load_preset(_write(tmp_path, BASE.replace('name = "base"', 'name = "mine"')))
    assert p.name == "mine"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.replace("[vae]", "colour = 3\n[vae]"), "unknown key 'colour'"),
        (lambda s: s + "\n[extra]\nx = 1\n", "unknown key 'extra'"),
        (lambda s: s.replace("window = 9", "window = 0"), "'window' must be positive"),
        (
            lambda s: s.replace("num_layers = 20", "num_layers = -2"),
            "'num_layers' must be positive",
        ),
        (lambda s: s.replace('"832x480"', '"830x480"'), "not divisible by 16"),
        (lambda s: s.replace("window = 9", 'window = "nine"'), "expected int"),
        (lambda s: s.replace('name = "base"', 'name = "base'), "malformed TOML"),
        (lambda s: s.replace('sampler = "inverted"', 'sampler = "sideways"'), "not one of"),
        (lambda s: s.replace('schedule = "geometric"', 'schedule = "nope"'), "unknown schedule"),
    ],
)
def test_bad_preset_files(tmp_path, edit, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_preset(_write(tmp_path, edit(BASE)))
    assert "mine.toml" in str(err.value) or "schedule" in message


def test_inline_schedule_kernel_that_cannot_apply(tmp_path):
    text = BASE.replace(
        'schedule = "geometric"',
        "schedule = { levels = [ { kernel = [1, 3, 3], frames = 1 } ] }",
    )
    with pytest.raises(PackingError, match="multiple of the patch size"):
        load_preset(_write(tmp_path, text))


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ConfigError, match="valid: base, extended, lite, tiny"):
        load_preset("huge")


def test_parse_resolution():
    assert (parse_resolution("832x480").width, parse_resolution("832X480").height) == (832, 480)
    for bad in ("832", "axb", "832x480x3", "-832x480"):
        with pytest.raises(ConfigError):
            parse_resolution(bad)
