"""Property tests (hypothesis): the duration parser, timestamped prompts and manifest loading
take any text and either give a well-formed answer or one UsageError, never a crash."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from fpk.errors import FpkError, UsageError
from fpk.run.jobs import read_manifest
from fpk.sampling.prompts import parse_prompt
from fpk.sampling.timeline import MAX_SECONDS, parse_length

FPS = st.integers(1, 120)
WORD = st.text(st.characters(categories=("L", "N", "Zs")), min_size=1, max_size=20).map(str.strip)


@given(st.integers(1, MAX_SECONDS), FPS)
def test_frames_are_taken_as_written(frames, fps):
    if frames <= MAX_SECONDS * fps:
        assert parse_length(f"{frames}f", fps) == frames


@given(st.integers(0, 59), st.integers(0, 59), st.integers(0, 5), FPS)
def test_h_m_s_add_up(s, m, h, fps):
    seconds = h * 3600 + m * 60 + s
    if seconds * fps >= 1:
        assert parse_length(f"{h}h{m}m{s}s", fps) == seconds * fps == parse_length(seconds, fps)


@given(st.decimals(0, 3600, places=2), FPS)
def test_seconds_round_to_frames(seconds, fps):
    frames = round(float(seconds) * fps)
    if frames >= 1:
        assert parse_length(f"{seconds}s", fps) == frames


@given(st.text(max_size=30), FPS)
def test_any_length_text_is_a_length_or_one_usage_error(text, fps):
    try:
        frames = parse_length(text, fps)
    except UsageError as err:
        assert "--len" in str(err)
    else:
        assert 1 <= frames <= MAX_SECONDS * fps


@given(st.lists(st.tuples(st.integers(0, 600), WORD.filter(bool)), min_size=1, max_size=6,
                unique_by=lambda e: e[0]))  # fmt: skip
def test_timestamped_entries_come_back_in_time_order(entries):
    prompt = " ".join(f"[{t}s: {text}]" for t, text in entries)
    spans = parse_prompt(prompt)
    assert [(s.start, s.text) for s in spans] == sorted((float(t), w) for t, w in entries)


@given(st.text(max_size=200))
def test_any_prompt_parses_or_gives_one_usage_error(text):
    try:
        spans = parse_prompt(text)
    except UsageError:
        return
    assert spans and all(s.end is None or s.end > s.start for s in spans)
    assert [s.start for s in spans] == sorted(s.start for s in spans)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([".toml", ".jsonl"]))
def test_any_manifest_bytes_load_or_give_one_fpk_error(data, suffix):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"jobs{suffix}"
        path.write_bytes(data)
        try:
            entries = read_manifest(path)
        except FpkError:
            return
    assert entries and all(isinstance(e, dict) for e in entries)


LENGTH = st.integers(1, 900).map("{}f".format)
JOB = st.fixed_dictionaries({"name": WORD.filter(bool), "len": LENGTH, "seed": st.integers(0, 9)})


@settings(deadline=None)
@given(st.lists(JOB, min_size=1, max_size=8))
def test_jsonl_manifest_entries_round_trip(jobs):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "jobs.jsonl"
        path.write_text("\n".join(json.dumps(j) for j in jobs) + "\n")
        assert read_manifest(path) == jobs
