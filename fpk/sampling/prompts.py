"""Timestamped prompts in FramePack-Studio's syntax: "[0s: a cat sits] [3s-5s: the cat jumps]".

Each entry starts at its time and lasts until its end time, or until the next entry starts.
Text outside brackets is a prompt for the whole video. Times snap to section boundaries, and a
change of prompt is blended over `blend` sections (linear weights on the embeddings).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fpk.errors import UsageError

MAX_PROMPT_CHARS = 20_000
_ENTRY = re.compile(
    r"\[\s*(?P<start>\d+(?:\.\d+)?)s?(?:\s*-\s*(?P<end>\d+(?:\.\d+)?)s?)?\s*:(?P<text>[^\]]*)\]"
)


@dataclass(frozen=True)
class PromptSpan:
    start: float  # seconds
    end: float | None  # seconds; None: until the next span or the end
    text: str


def parse_prompt(prompt: str) -> tuple[PromptSpan, ...]:
    """Spans of a (possibly timestamped) prompt, sorted by start."""
    if len(prompt) > MAX_PROMPT_CHARS:
        raise UsageError(
            f"--prompt is {len(prompt):,} characters; the limit is {MAX_PROMPT_CHARS:,}"
        )
    spans = [
        PromptSpan(float(m["start"]), float(m["end"]) if m["end"] else None, m["text"].strip())
        for m in _ENTRY.finditer(prompt)
    ]
    rest = _ENTRY.sub("", prompt).strip()
    if "[" in rest or "]" in rest:
        raise UsageError(
            f"--prompt has a bracket that is not a '[TIME: text]' entry: {rest[:60]!r}"
        )
    for span in spans:
        if span.end is not None and span.end <= span.start:
            raise UsageError(
                f"prompt entry '[{span.start:g}s-{span.end:g}s: ...]' ends before it starts"
            )
    if not spans:
        return (PromptSpan(0.0, None, rest),)
    if rest:  # untimed text applies wherever no entry does
        spans.insert(0, PromptSpan(0.0, None, rest))
    return tuple(sorted(spans, key=lambda s: s.start))


def prompt_at(spans: tuple[PromptSpan, ...], t: float) -> str:
    """The text in force at time `t`: the latest span started by `t` and not yet ended."""
    current = spans[0].text if spans else ""
    for span in spans:
        if span.start <= t and (span.end is None or t < span.end):
            current = span.text
    return current


def section_prompts(
    spans: tuple[PromptSpan, ...], section_starts: list[float], blend: int = 0
) -> list[tuple[tuple[str, float], ...]]:
    """For each section (its start time in seconds), the prompts and weights to mix.

    A section takes the prompt in force at its start (snapped to section boundaries); with
    `blend` > 0 a change of prompt fades in over that many sections.
    """
    plain = [prompt_at(spans, t) for t in section_starts]
    out: list[tuple[tuple[str, float], ...]] = []
    for i, text in enumerate(plain):
        prev = next((plain[j] for j in range(i - 1, -1, -1) if plain[j] != text), None)
        since = next((i - j for j in range(i, -1, -1) if j == 0 or plain[j - 1] != text), 0)
        if blend > 0 and prev is not None and since < blend:
            w = (since + 1) / (blend + 1)
            out.append(((prev, 1 - w), (text, w)))
        else:
            out.append(((text, 1.0),))
    return out
