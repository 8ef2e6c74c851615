"""Timestamped prompts."""

from __future__ import annotations

import pytest

from fpk.errors import UsageError
from fpk.sampling.prompts import PromptSpan, parse_prompt, prompt_at, section_prompts


def test_plain_prompt():
    assert parse_prompt("a cat") == (PromptSpan(0.0, None, "a cat"),)


def test_studio_syntax():
    spans = parse_prompt("[0s: a cat sits] [3s-5s: the cat jumps]")
    assert spans == (PromptSpan(0, None, "a cat sits"), PromptSpan(3, 5, "the cat jumps"))
    assert [prompt_at(spans, t) for t in (0, 2.9, 3, 4.9, 5, 9)] == [
        "a cat sits",
        "a cat sits",
        "the cat jumps",
        "the cat jumps",
        "a cat sits",
        "a cat sits",
    ]


def test_snapped_to_sections_with_blend():
    spans = parse_prompt("[0s: sit] [2s: jump]")
    starts = [0, 1.2, 2.4, 3.6, 4.8]  # 36 frames per section at 30 fps
    assert [p[0][0] for p in section_prompts(spans, starts)] == [
        "sit",
        "sit",
        "jump",
        "jump",
        "jump",
    ]
    blended = section_prompts(spans, starts, blend=2)
    assert blended[2] == (("sit", pytest.approx(2 / 3)), ("jump", pytest.approx(1 / 3)))
    assert blended[3] == (("sit", pytest.approx(1 / 3)), ("jump", pytest.approx(2 / 3)))
    assert blended[4] == (("jump", 1.0),)


@pytest.mark.parametrize("bad", ["[3s-1s: backwards]", "a [cat", "x" * 100_000])
def test_bad_prompts(bad):
    with pytest.raises(UsageError):
        parse_prompt(bad)
