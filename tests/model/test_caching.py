"""Step caches: the spec, TeaCache's arithmetic, each cache on a tiny run (fewer forwards,
close output), and MagCache's calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fpk.errors import UsageError
from fpk.model import caching as c


def test_cache_specs_parse_and_bad_ones_name_the_valid():
    assert c.parse_cache("none") == c.CacheSpec()
    assert c.parse_cache("teacache") == c.CacheSpec("teacache", 0.15)
    assert str(c.parse_cache("fbcache:0.2")) == "fbcache:0.2"
    for bad, words in (("tea", "none, teacache, magcache, fbcache"), ("teacache:x", "number"),
                       ("magcache:0", "between 0 and 10"), ("none:1", "no threshold")):  # fmt: skip
        with pytest.raises(UsageError, match=words):
            c.parse_cache(bad)


@given(st.lists(st.floats(0.0, 0.5), min_size=3, max_size=30), st.floats(0.01, 1.0))
@settings(max_examples=100, deadline=None)
def test_teacache_computes_first_and_last_and_whenever_the_change_adds_up(changes, threshold):
    steps = len(changes)
    state = c.TeaCacheState(threshold, steps)
    x = torch.ones(4)
    state.residual = torch.zeros(4)
    computed, acc = [], 0.0
    for i, change in enumerate(changes):
        y = x * (1 + change)  # relative L1 change of exactly `change`
        skipped = state.skip(y)
        if i in (0, steps - 1):
            want = True
        else:
            acc += float(np.polyval(c.TEACACHE_COEFFICIENTS, change))
            want = acc >= threshold
        if want:
            acc = 0.0
        assert skipped == (not want), (i, changes, threshold)
        computed.append(not skipped)
        x = y
    assert computed[0] and computed[-1]


def _run(cache: str, steps: int = 8):
    from fpk.config import load_preset
    from fpk.run.batch import load_runtime
    from fpk.synthetic import world
    from tests.latents import world_job_latents

    rt = _run.rt = getattr(_run, "rt", None) or load_runtime(load_preset("tiny"), None, "cpu",
                                                             "float32")  # fmt: skip
    counter = c.ForwardCounter(rt.components.transformer)
    latents = world_job_latents(rt, world.HELD_OUT + 2, len="0.6s", steps=steps, cache=cache)
    counter.close()
    return latents, counter.computed


def test_each_cache_skips_forwards_and_stays_close_to_the_uncached_output():
    want, all_forwards = _run("none")
    assert all_forwards == 8  # one section, 8 steps
    for cache in ("teacache:0.3", "magcache:0.5", "fbcache:0.3"):
        got, forwards = _run(cache)
        assert forwards < all_forwards, cache
        snr = 10 * torch.log10(want.var() / ((got - want) ** 2).mean())
        assert snr > 10, (cache, float(snr))
    again, forwards = _run("none")  # a cache leaves nothing behind for the next job
    assert forwards == all_forwards and torch.equal(again, want)


def test_magcache_needs_calibrated_ratios_and_calibrate_writes_them(tmp_path, monkeypatch):
    monkeypatch.setattr(c, "CALIBRATION", tmp_path / "none.json")
    with pytest.raises(UsageError, match="fpk calibrate --preset tiny"):
        c.magcache_ratios("tiny")
    from typer.testing import CliRunner

    from fpk.cli import app

    out = tmp_path / "cal.json"
    result = CliRunner().invoke(app, ["calibrate", "--steps", "4", "--scenes", "1", "--len",
                                      "0.6s", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    entry = json.loads(out.read_text())["tiny"]["magcache"]
    assert entry["steps"] == 4 and len(entry["ratios"]) == 4 and entry["ratios"][0] == 1.0
    assert all(0 < r < 10 for r in entry["ratios"])


def test_the_shipped_calibration_covers_the_tiny_preset():
    ratios = c.magcache_ratios("tiny")
    assert len(ratios) == 25 and ratios[0] == 1.0
