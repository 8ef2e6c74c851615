"""Job options, declared once: the manifest keys, their checks, their defaults and the CLI
options of `fpk generate` / `fpk extend` all come from `FIELDS`.

A field's default is a literal (from fpk.config), or the name of a `Preset.sampling`
attribute ("the preset's"). Checks raise UsageError naming the option and the valid range.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fpk import config as c
from fpk.errors import UsageError
from fpk.sampling.orders import ORDERS, PADDINGS

GENERATE, EXTEND = "generate", "extend"
BOTH = frozenset({GENERATE, EXTEND})


@dataclass(frozen=True)
class JobField:
    """One job option: its manifest key (= the CLI option's name with '-' for '_')."""

    name: str
    kind: type  # str, int, float, bool or Path
    help: str
    default: Any = None  # a literal; None: unset unless `preset` names the default
    preset: str = ""  # attribute of Preset.sampling holding the default
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    commands: frozenset[str] = BOTH  # the CLI commands with this option (none: manifest only)
    extend: bool = False  # one of fpk extend's own settings (ExtendSpec)
    flag: str = ""  # the CLI declaration where it is not plain --name (e.g. on/off pairs)

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    def default_for(self, sampling: c.Sampling) -> Any:
        return getattr(sampling, self.preset) if self.preset else self.default

    def check(self, value: Any) -> Any:
        """`value` as this field's type, within its range or choices; None stays None."""
        if value is None:
            return None
        if self.choices:
            return _choice(value, self.name, self.choices)
        if self.kind is int:
            return _int(value, self.option, self.low, self.high)
        if self.kind is float:
            return _float(value, self.option, self.low, self.high)
        if self.kind is str and not isinstance(value, str):
            raise UsageError(f"{self.name} must be text, got {value!r}")
        if self.kind is bool and not isinstance(value, bool):
            raise UsageError(f"{self.option} must be true or false, got {value!r}")
        if self.kind is list:
            return _texts(value, self.option)
        return value

    def describe(self) -> str:
        """The help text with its default (for a preset's default: the value in each preset)."""
        if self.preset:
            return f"{self.help} (default: the preset's: {preset_defaults(self.preset)})"
        if self.default in (None, "") or self.kind is bool:
            return self.help
        return f"{self.help} (default {self.default})"

    def declaration(self) -> list[str]:
        """The CLI option's names: --name, or --name/--no-name for an on/off setting."""
        if self.flag:
            return self.flag.split(" ")
        if self.kind is bool:
            return [f"{self.option}/--no-{self.option[2:]}"]
        return [self.option]


@functools.cache  # help text: each preset file read once per process
def preset_defaults(attr: str) -> str:
    """`Preset.sampling.<attr>` of the default preset and of base: "tiny 5, base 9" (one value
    when they agree)."""
    names = (c.DEFAULT_PRESET, "base")
    values = {name: getattr(c.load_preset(name).sampling, attr) for name in names}
    if len(set(values.values())) == 1:
        value = next(iter(values.values()))
        return f"{value if value != () else 'none'} in every preset"
    return ", ".join(f"{name} {value}" for name, value in values.items())


G, X = frozenset({GENERATE}), frozenset({EXTEND})
FIELDS: tuple[JobField, ...] = (
    JobField("image", Path, "Start image (omit for text-to-video).", commands=G),
    JobField("video", Path, "Clip to continue.", commands=frozenset()),  # extend's argument
    JobField(
        "prompt", str, 'Prompt; timestamped: "[0s: a cat sits] [3s-5s: the cat jumps]".', default=""
    ),  # fmt: skip
    JobField("len", str, "Length: 5s, 1m30s, 150f or plain seconds.", c.DEFAULT_LENGTH),
    JobField("end_image", Path, "Image the video ends on (inverted).", commands=G),
    JobField(
        "end_strength",
        float,
        "Weight of the end image, 0..1.",
        c.DEFAULT_END_STRENGTH,
        low=0,
        high=1,
        commands=G,
    ),  # fmt: skip
    JobField("negative_prompt", str, "Negative prompt (used when cfg > 1).", default=""),
    JobField(
        "context_frames",
        int,
        "Source frames that enter the history (1+4k).",
        low=1,
        high=10**7,
        commands=X,
        extend=True,
    ),  # fmt: skip
    JobField(
        "anchor_image",
        Path,
        "Start-image stream (default: the first frame).",
        commands=X,
        extend=True,
    ),  # fmt: skip
    JobField(
        "keep_source",
        bool,
        "Output source + continuation.",
        commands=X,
        extend=True,
    ),  # fmt: skip
    JobField(
        "reencode_source", bool, "Pass the source through the VAE.", commands=X, extend=True
    ),  # fmt: skip
    JobField("reverse", bool, "Extend backwards in time.", commands=X, extend=True),
    JobField("seed", int, "Random seed.", c.DEFAULT_SEED, low=0, high=c.MAX_SEED),
    JobField("steps", int, "Denoising steps.", preset="steps", low=1, high=c.MAX_STEPS),
    JobField(
        "cfg", float, "Real CFG scale; >1 runs the negative prompt.", preset="cfg", low=0, high=100
    ),  # fmt: skip
    JobField("guidance", float, "Distilled guidance.", preset="guidance", low=0, high=1000),
    JobField(
        "guidance_rescale",
        float,
        "Rescale of real CFG, 0..1.",
        preset="guidance_rescale",
        low=0,
        high=1,
        commands=frozenset(),
    ),  # fmt: skip
    JobField("window", int, "Latent frames per section.", preset="window", low=1, high=64),
    JobField(
        "sampler",
        str,
        "Section order: " + ", ".join(ORDERS) + ".",
        preset="sampler",
        choices=tuple(ORDERS),
        commands=G,
    ),  # fmt: skip
    JobField(
        "padding",
        str,
        "Inverted positions: released ([3,2,..,2,1,0]) or time-true.",
        c.DEFAULT_PADDING,
        choices=PADDINGS,
    ),  # fmt: skip
    JobField("solver", str, "unipc or euler.", preset="solver", choices=c.SOLVERS),
    JobField(
        "prompt_blend",
        int,
        "Sections over which a timestamped prompt fades in.",
        c.DEFAULT_PROMPT_BLEND,
        low=0,
        high=100,
    ),  # fmt: skip
    JobField(
        "resolution",
        str,
        "WIDTHxHEIGHT, e.g. 832x480 (default: the preset's bucket nearest the input's aspect).",
    ),  # fmt: skip
    JobField(
        "cache",
        str,
        "Step cache: none, teacache[:T], magcache[:T] or fbcache[:T] (skips the blocks on "
        "steps whose input barely changed).",
        "none",
    ),  # fmt: skip
    JobField("crf", int, "H.264 quality, 0 lossless.", preset="crf", low=0, high=51),
    JobField("fps", int, "Output frame rate.", preset="fps", low=1, high=240),
    JobField("name", str, "Output name (default: input stem + settings hash)."),
    JobField(
        "lora", list, "LoRA PATH[:WEIGHT] (repeatable; .safetensors).", preset="lora"
    ),  # fmt: skip
)
BY_NAME = {f.name: f for f in FIELDS}
KEYS = tuple(BY_NAME)  # what a manifest entry may set
PATH_KEYS = tuple(f.name for f in FIELDS if f.kind is Path)
EXTEND_KEYS = tuple(f.name for f in FIELDS if f.extend)


def for_command(command: str) -> tuple[JobField, ...]:
    """The fields `fpk <command>` has options for."""
    return tuple(f for f in FIELDS if command in f.commands)


@dataclass(frozen=True)
class ExtendSpec:
    """fpk extend's own settings; None where not given (the extension picks)."""

    context_frames: int | None = None
    anchor_image: Path | None = None
    keep_source: bool | None = None
    reencode_source: bool | None = None
    reverse: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        """The settings that were given, as the sidecar (and the settings hash) record them."""
        out = {}
        for key in EXTEND_KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key] = str(value) if isinstance(value, Path) else value
        return out


def _texts(value: Any, option: str) -> tuple[str, ...]:
    """A text or a list of texts -> a tuple of texts."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(x, str) for x in items):
        raise UsageError(f"{option} must be a text or a list of texts, got {value!r}")
    return tuple(items)


def _int(value: Any, option: str, low: float | None, high: float | None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise UsageError(f"{option} must be a whole number, got {value!r}")
    try:
        n = int(value)
    except ValueError:
        raise UsageError(f"{option} must be a whole number, got {value!r}") from None
    if low is not None and high is not None and not low <= n <= high:
        raise UsageError(f"{option} must be between {low} and {high}, got {n}")
    return n


def _float(value: Any, option: str, low: float | None, high: float | None) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{option} must be a number, got {value!r}") from None
    if low is not None and high is not None and not low <= x <= high:
        raise UsageError(f"{option} must be between {low:g} and {high:g}, got {x:g}")
    return x


def _choice(value: Any, key: str, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise UsageError(f"unknown {key} '{value}' (valid: {', '.join(valid)})")
    return value
