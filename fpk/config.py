"""Presets and packing schedules: TOML files read into frozen dataclasses.

Unknown keys are rejected with the key and the file named. Presets live in `presets/`
(shipped inside the package as `fpk/presets`); a user may pass a path to their own file.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from fpk.errors import ConfigError, UsageError
from fpk.model.packing import FillMode, LatentGrid, Level, Schedule, validate_schedule

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESET_DIR = Path(__file__).resolve().parent / "presets"
SCHEDULES_FILE = PRESET_DIR / "schedules.toml"
SAMPLERS: tuple[str, ...] = ("inverted", "anti-drifting", "vanilla", "forward")
SOLVERS: tuple[str, ...] = ("unipc", "euler")

# Job defaults that are not the preset's (those are in `Sampling`); fpk.run.options uses them.
DEFAULT_SEED = 31337  # the official demo's
DEFAULT_LENGTH = "5s"
DEFAULT_PADDING = "released"  # the released weights' inverted padding [3, 2, .., 2, 1, 0]
DEFAULT_END_STRENGTH = 1.0
DEFAULT_PROMPT_BLEND = 0  # sections; 0: a timestamped prompt switches at its time
MAX_STEPS = 1000
MAX_SEED = 2**63 - 1
TRAIN_SEED = 0  # `fpk train`'s default seed (the shipped tiny model's runs)
DEFAULT_PRESET = "tiny"  # every command's: the one that runs anywhere with no download


@dataclass(frozen=True)
class Architecture:
    """Transformer shape; keys are those of diffusers' HunyuanVideoFramepack config.json."""

    num_attention_heads: int
    attention_head_dim: int
    num_layers: int
    num_single_layers: int
    num_refiner_layers: int
    mlp_ratio: float
    patch_size: int
    patch_size_t: int
    in_channels: int
    out_channels: int
    text_embed_dim: int
    pooled_projection_dim: int
    image_proj_dim: int
    rope_axes_dim: tuple[int, int, int]
    rope_theta: float = 256.0

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim


@dataclass(frozen=True)
class VaeSpec:
    """What the context accounting needs of the VAE; the real one is read from its config."""

    spatial_compression: int
    temporal_compression: int
    latent_channels: int
    #: Decode a chunk in diffusers' temporal tiles (memory) rather than in one pass. fpk's
    #: chunks are already at most two windows long; small frames need no further tiling.
    framewise_decoding: bool = True


@dataclass(frozen=True)
class Resolution:
    """Output size in pixels, written WIDTHxHEIGHT as on the command line."""

    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


@dataclass(frozen=True)
class Sampling:
    resolution: Resolution
    window: int = 9
    steps: int = 25
    guidance: float = 10.0
    cfg: float = 1.0
    guidance_rescale: float = 0.0
    fps: int = 30
    crf: int = 16
    sampler: str = "inverted"
    solver: str = "unipc"
    lora: tuple[str, ...] = ()  # PATH[:WEIGHT] each, relative to the preset file


@dataclass(frozen=True)
class Weights:
    """Where a preset's weights come from: repo ids, "embedded", or "" for none published."""

    trained_schedule: str = ""
    transformer: str = ""
    transformer_forward: str = ""
    components: str = ""
    image_encoder: str = ""
    domain: str = ""  # "fpk-world": trained on fpk's synthetic world only (warns on photos)
    # download sizes (GB) of what fpk takes from each repo, for the missing-weights message
    transformer_gb: float = 0.0
    components_gb: float = 0.0
    image_encoder_gb: float = 0.0


@dataclass(frozen=True)
class Preset:
    name: str
    label: str
    description: str
    architecture: Architecture
    vae: VaeSpec
    schedule: Schedule
    sampling: Sampling
    weights: Weights
    source: Path = field(default=Path(), compare=False)

    @property
    def layout_in_use(self) -> str:
        """The packing layout generation runs: the weights' training layout where they name
        one (base: "released"), else the preset's schedule."""
        return self.weights.trained_schedule or self.schedule.name

    def latent_grid(self, resolution: Resolution | None = None) -> LatentGrid:
        """Latent frame size for `resolution` (default: the preset's), checked to divide."""
        res = resolution or self.sampling.resolution
        check_resolution(res, self.resolution_multiple)
        s = self.vae.spatial_compression
        return LatentGrid(height=res.height // s, width=res.width // s)

    @property
    def resolution_multiple(self) -> int:
        """Pixel sizes must divide by VAE compression times patch size."""
        return self.vae.spatial_compression * self.architecture.patch_size


def parse_resolution(text: str) -> Resolution:
    """'832x480' -> Resolution(832, 480)."""
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ConfigError(f"resolution '{text}' is not WIDTHxHEIGHT, e.g. 832x480")
    return Resolution(int(parts[0]), int(parts[1]))


def check_resolution(res: Resolution, multiple: int) -> None:
    if res.width <= 0 or res.height <= 0:
        raise ConfigError(f"resolution {res} must be positive in both sizes")
    if res.width % multiple or res.height % multiple:
        raise ConfigError(
            f"resolution {res} is not divisible by {multiple} (VAE compression x patch size); "
            f"try {_round_down(res.width, multiple)}x{_round_down(res.height, multiple)}"
        )


def _round_down(size: int, multiple: int) -> int:
    return max(multiple, size // multiple * multiple)


# --- reading TOML ------------------------------------------------------------------------


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: malformed TOML: {err}") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None


def build(cls: type, table: Any, where: str) -> Any:
    """Make dataclass `cls` from a TOML table: unknown keys and wrong types are errors."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table, got {type(table).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' (valid: {', '.join(fields)})")
    missing = [n for n, f in fields.items() if n not in table and _required(f)]
    if missing:
        raise ConfigError(f"{where}: missing key '{missing[0]}'")
    return cls(**{k: _coerce(hints[k], v, f"{where}: key '{k}'") for k, v in table.items()})


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _coerce(next(a for a in typing.get_args(hint) if a is not type(None)), value, where)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list) or (args[-1] is not Ellipsis and len(value) != len(args)):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        item = args[0]
        return tuple(_coerce(item, v, where) for v in value)
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            _bad(where, "one of " + ", ".join(map(repr, choices)), value)
        return value
    if hint is Resolution:
        return parse_resolution(value) if isinstance(value, str) else _bad(where, "a string", value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not (
        isinstance(value, hint) and not (hint is int and isinstance(value, bool))
    ):
        _bad(where, hint.__name__, value)
    return value


def _bad(where: str, expected: str, value: Any) -> typing.NoReturn:
    raise ConfigError(f"{where}: expected {expected}, got {value!r}")


# --- schedules ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _LevelToml:
    kernel: tuple[int, int, int]
    frames: int


@dataclass(frozen=True)
class _ScheduleToml:
    levels: tuple[dict, ...]
    ratio: float = 2.0
    tail: str = "delete"
    fill: FillMode = "none"
    independent: bool = True
    description: str = ""


def schedule_from_table(name: str, table: Any, where: str) -> Schedule:
    raw = build(_ScheduleToml, table, where)
    levels = tuple(
        Level(**dataclasses.asdict(build(_LevelToml, lv, f"{where}, level {i + 1}")))
        for i, lv in enumerate(raw.levels)
    )
    schedule = Schedule(
        name=name,
        levels=levels,
        tail=raw.tail,
        fill=raw.fill,
        ratio=raw.ratio,
        independent=raw.independent,
        description=raw.description,
    )
    validate_schedule(schedule)
    return schedule


@cache
def schedules() -> dict[str, Schedule]:
    """The named schedules of presets/schedules.toml, by name."""
    tables = read_toml(SCHEDULES_FILE)
    return {
        name: schedule_from_table(name, table, f"{SCHEDULES_FILE} [{name}]")
        for name, table in tables.items()
    }


def get_schedule(name: str) -> Schedule:
    known = schedules()
    if name not in known:
        raise ConfigError(f"unknown schedule '{name}' (valid: {', '.join(known)})")
    return known[name]


def check_layouts(preset: Preset, resolution: Resolution | None = None) -> None:
    """Raise PackingError unless both the preset's schedule and the layout its weights run (a
    named `trained_schedule`, see `layout_in_use`) fit the latent frame of `resolution`
    (default: the preset's), so that a job fails before any weights load, not in sampling."""
    grid = preset.latent_grid(resolution)
    validate_schedule(preset.schedule, grid)
    trained = preset.weights.trained_schedule
    if trained and trained != preset.schedule.name and trained in schedules():
        fix = f"the {preset.name} weights run this layout: use a higher resolution"
        validate_schedule(get_schedule(trained), grid, fix)


# --- presets -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _PresetToml:
    name: str
    label: str
    architecture: dict
    vae: dict
    packing: dict
    sampling: dict
    weights: dict
    description: str = ""


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml") if p.stem != "schedules")


def load_preset(name_or_path: str) -> Preset:
    """A preset by name (presets/NAME.toml) or by path to the user's own TOML file."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        if name_or_path not in preset_names():
            raise ConfigError(
                f"unknown preset '{name_or_path}' (valid: {', '.join(preset_names())}, "
                "or a path to a .toml file)"
            )
        path = PRESET_DIR / f"{name_or_path}.toml"
    try:
        return _preset_from_table(read_toml(path), path)
    except UsageError as err:  # every problem of the file names the file
        if str(path) in str(err):
            raise
        raise type(err)(f"{path}: {err}") from None


def _preset_from_table(table: dict, path: Path) -> Preset:
    raw = build(_PresetToml, table, str(path))
    sampling = build(Sampling, raw.sampling, f"{path} [sampling]")
    _check_choice(sampling.sampler, SAMPLERS, f"{path} [sampling] sampler")
    _check_choice(sampling.solver, SOLVERS, f"{path} [sampling] solver")
    weights = build(Weights, raw.weights, f"{path} [weights]")
    if weights.trained_schedule:
        get_schedule(weights.trained_schedule)
    preset = Preset(
        name=raw.name,
        label=raw.label,
        description=raw.description,
        architecture=build(Architecture, raw.architecture, f"{path} [architecture]"),
        vae=build(VaeSpec, raw.vae, f"{path} [vae]"),
        schedule=_packing_schedule(raw.packing, path),
        sampling=sampling,
        weights=weights,
        source=path,
    )
    _check_positive(preset, path)
    check_layouts(preset)
    return preset


def _packing_schedule(packing: dict, path: Path) -> Schedule:
    unknown = sorted(set(packing) - {"schedule"})
    if unknown:
        raise ConfigError(f"{path} [packing]: unknown key '{unknown[0]}' (valid: schedule)")
    spec = packing.get("schedule")
    if isinstance(spec, str):
        return get_schedule(spec)
    if isinstance(spec, dict):
        return schedule_from_table("custom", spec, f"{path} [packing.schedule]")
    raise ConfigError(f"{path} [packing]: 'schedule' must name a schedule or be a table")


def _check_choice(value: str, valid: tuple[str, ...], where: str) -> None:
    if value not in valid:
        raise ConfigError(f"{where}: '{value}' is not one of {', '.join(valid)}")


def _check_positive(preset: Preset, path: Path) -> None:
    for section in (preset.architecture, preset.vae, preset.sampling):
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                floor_ok = (
                    value >= 0
                    if f.name in {"cfg", "guidance", "guidance_rescale", "crf"}
                    else value > 0
                )
                if not floor_ok:
                    raise ConfigError(f"{path}: '{f.name}' must be positive, got {value}")


def preset_as_dict(preset: Preset) -> dict[str, Any]:
    """Every setting of `preset` as plain data (for `fpk presets show` and sidecars)."""
    data = dataclasses.asdict(preset)
    data["source"] = str(preset.source)
    data["sampling"]["resolution"] = str(preset.sampling.resolution)
    data["layout_in_use"] = preset.layout_in_use
    return data
