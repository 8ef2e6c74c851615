"""Job options declared once: the CLI options, manifest keys and checks come from one table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main

from fpk.cli import app
from fpk.config import load_preset
from fpk.errors import UsageError
from fpk.run.jobs import resolve_job
from fpk.run.options import BY_NAME, FIELDS, KEYS, for_command


@pytest.mark.parametrize("command", ["generate", "extend"])
def test_every_field_of_a_command_is_one_of_its_options(command):
    click = typer.main.get_command(app).commands[command]
    names = {p.name for p in click.params}
    assert {f.name for f in for_command(command)} <= names


def test_manifest_keys_are_the_table():
    assert KEYS == tuple(f.name for f in FIELDS)
    with pytest.raises(Exception, match="unknown key 'speed'"):
        resolve_job(load_preset("tiny"), {"speed": 2}, {}, Path("out"))


def test_the_readme_names_every_manifest_key_and_no_other():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("#### Manifests", 1)[1].split("```", 1)[0]
    named = set(re.findall(r"`([a-z][a-z_]*)`", section))
    assert named == set(KEYS), (set(KEYS) - named, named - set(KEYS))


@pytest.mark.parametrize("key, bad", [("steps", 0), ("crf", 99), ("fps", 0), ("sampler", "x")])
def test_ranges_and_choices_name_the_field(key, bad):
    with pytest.raises(UsageError, match=key):
        BY_NAME[key].check(bad)


def test_settings_hash_unchanged_by_the_table():
    """Literals from the code before the table: resumption of earlier work still matches."""
    root = Path(__file__).resolve().parents[2]
    entry = {"image": "examples/start.png", "prompt": "the red circle stays", "len": "2s",
             "seed": 7, "reverse": True, "keep_source": False, "context_frames": 9}  # fmt: skip
    job = resolve_job(load_preset("tiny"), entry, {"steps": 5, "name": "x"}, Path("o"), base=root)
    assert job.settings_hash == "21716220d7038590"
    assert job.as_dict()["extend"] == {"context_frames": 9, "keep_source": False, "reverse": True}
    text = resolve_job(load_preset("tiny"), {"prompt": "the blue square stays in place"}, {}, root)
    assert text.settings_hash == "a9879e058bf57cd9"
