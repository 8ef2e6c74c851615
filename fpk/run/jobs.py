"""Jobs: one command line or a manifest of many, resolved once into frozen `JobSpec`s.

Precedence, in one place (`resolve_job`): defaults < preset < manifest entry < command-line
flags. Every input is checked here, before any weights load; a manifest entry that fails its
checks becomes a failed job and the batch goes on.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fpk.config import (
    Preset,
    Resolution,
    check_layouts,
    check_resolution,
    parse_resolution,
    read_toml,
)
from fpk.errors import ConfigError, FpkError, UsageError
from fpk.model.caching import parse_cache
from fpk.model.lora import LoraRef, file_sha256
from fpk.run.options import EXTEND_KEYS, FIELDS, KEYS, PATH_KEYS, ExtendSpec
from fpk.sampling.prompts import parse_prompt
from fpk.sampling.timeline import parse_length


@dataclass(frozen=True)
class JobSpec:
    """A fully resolved job: what the pipeline runs and the sidecar records."""

    name: str
    preset: str
    out: Path
    prompt: str
    frames: int
    length: str
    seed: int
    steps: int
    cfg: float
    guidance: float
    guidance_rescale: float
    window: int
    sampler: str
    padding: str
    solver: str
    fps: int
    crf: int
    image: Path | None = None
    end_image: Path | None = None
    end_strength: float = 1.0
    resolution: Resolution | None = None
    negative_prompt: str = ""
    prompt_blend: int = 0
    video: Path | None = None  # fpk extend: the clip to continue
    extend: ExtendSpec = ExtendSpec()  # fpk extend's own settings
    weights_identity: str = ""
    lora: tuple[LoraRef, ...] = ()  # fused into the transformer for this job
    cache: str = "none"  # fpk.model.caching: a step cache, e.g. "teacache:0.15"

    @property
    def output(self) -> Path:
        return self.out / f"{self.name}.mp4"

    @property
    def sidecar(self) -> Path:
        return self.out / f"{self.name}.json"

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("out", "image", "end_image", "video"):
            data[key] = None if data[key] is None else str(data[key])
        data["resolution"] = None if self.resolution is None else str(self.resolution)
        data["extend"] = self.extend.as_dict()
        data["lora"] = [ref.as_dict() for ref in self.lora]
        return data

    @property
    def settings_hash(self) -> str:
        data = self.as_dict()
        for key in ("out", "name"):
            data.pop(key)
        for key in ("image", "end_image"):  # the file's content, not its path
            path = getattr(self, key)
            data[key] = file_sha256(path) if path is not None else None
        data["lora"] = [[ref.sha256, ref.weight] for ref in self.lora]  # content, not path
        if not self.lora:
            data.pop("lora")  # hashes of jobs without LoRAs as before LoRAs existed
        if self.cache == "none":
            data.pop("cache")  # nor caches
        if self.video is not None:  # a clip may be large: its size and time stand for it
            st = self.video.stat()
            data["video"] = f"{st.st_size}-{st.st_mtime_ns}"
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def resolve_job(
    preset: Preset,
    entry: dict[str, Any],
    flags: dict[str, Any],
    out: Path,
    where: str = "command line",
    weights_identity: str = "",
    base: Path | None = None,
) -> JobSpec:
    """One job: defaults < preset < manifest `entry` < command-line `flags` (None = unset)."""
    unknown = sorted(set(entry) - set(KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' (valid: {', '.join(KEYS)})")
    values = {**entry, **{k: v for k, v in flags.items() if v is not None}}
    for key in PATH_KEYS:
        if values.get(key) is not None:
            path = Path(str(values[key])).expanduser()
            values[key] = path if path.is_absolute() or base is None else base / path
    got = _checked(values, preset)
    spec = JobSpec(
        name="", preset=preset.name, out=out, prompt=got["prompt"],
        frames=parse_length(str(got["len"]), got["fps"]), length=str(got["len"]),
        **{k: got[k] for k in _SPEC_KEYS},
        resolution=_resolution(got["resolution"], preset),
        extend=ExtendSpec(**{k: got[k] for k in EXTEND_KEYS}),
        weights_identity=weights_identity,
        lora=_loras(got["lora"], base if values.get("lora") is not None else preset.source.parent,
                    preset),
    )  # fmt: skip
    parse_prompt(spec.prompt)
    spec = dataclasses.replace(spec, cache=str(parse_cache(spec.cache)))
    _check_files(spec)
    name = str(got["name"] or _default_name(spec))
    return dataclasses.replace(spec, name=_safe_name(name))


#: Fields that go into the JobSpec as they are checked (the rest are derived from or wrapped).
_SPEC_KEYS = tuple(
    f.name
    for f in FIELDS
    if not f.extend and f.name not in ("prompt", "len", "resolution", "name", "lora")
)


def _loras(texts: tuple[str, ...], base: Path | None, preset: Preset) -> tuple[LoraRef, ...]:
    """Each PATH[:WEIGHT], its file hashed and its keys checked against the preset's
    transformer (relative to `base`: the manifest's folder, or the preset file's)."""
    from fpk.model.lora import check_lora, parse_lora

    refs = tuple(parse_lora(text, base) for text in texts)
    for ref in refs:
        check_lora(ref, preset)
    return refs


def _checked(values: dict[str, Any], preset: Preset) -> dict[str, Any]:
    """Every field's value (given, else its default), checked."""
    sampling = preset.sampling
    got = {}
    for f in FIELDS:
        value = values.get(f.name)
        got[f.name] = f.check(f.default_for(sampling) if value is None else value)
    return got


def _default_name(spec: JobSpec) -> str:
    source = spec.video or spec.image
    stem = source.stem if source is not None else "text"
    return f"{stem}-{spec.settings_hash[:8]}"


def _safe_name(name: str) -> str:
    bad = set('/\\:*?"<>|\0')
    if not name or name in (".", "..") or any(c in bad for c in name):
        raise UsageError(f"job name '{name}' cannot be a file name; use letters, digits, - and _")
    return name


def _resolution(value: Any, preset: Preset) -> Resolution | None:
    if value is None:
        return None
    res = value if isinstance(value, Resolution) else parse_resolution(str(value))
    check_resolution(res, preset.resolution_multiple)
    check_layouts(preset, res)  # the layout the weights run too, not only the preset's
    return res


def _check_files(spec: JobSpec) -> None:
    """Open every image now, so a bad one fails its job before any weights load."""
    if spec.image is not None:
        _check_image(spec.image, "--image")
    if spec.end_image is not None:
        _check_image(spec.end_image, "--end-image")
        if spec.sampler != "inverted":
            raise UsageError("--end-image needs --sampler inverted (the end is generated first)")
    if spec.extend.anchor_image is not None:
        _check_image(spec.extend.anchor_image, "--anchor-image")
    if spec.video is not None:
        from fpk.media.clips import probe

        probe(spec.video)


def _check_image(path: Path, what: str) -> None:
    """`open_image`, once per version of a file: the 10,000 jobs of a seed sweep over one
    image decode it once (a file changed since, or one that failed, is opened again)."""
    try:
        st = path.stat()
    except OSError:
        st = None  # open_image says what is wrong
    if st is None:
        _open_image(path, what)
    else:
        _open_image_once(path, what, st.st_size, st.st_mtime_ns, st.st_ino)


def _open_image(path: Path, what: str) -> None:
    from fpk.media.images import open_image

    open_image(path, what)


@functools.lru_cache(maxsize=4096)
def _open_image_once(path: Path, what: str, size: int, mtime_ns: int, inode: int) -> None:
    _open_image(path, what)  # an error is raised each time: only a good file is remembered


# --- manifests ---------------------------------------------------------------------------


def read_manifest(path: Path) -> list[dict[str, Any]]:
    """Entries of a TOML (`[[job]]` tables) or JSONL (one object a line) manifest."""
    if not path.is_file():
        raise UsageError(f"--manifest {path}: no such file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"--manifest {path}: not UTF-8 text (byte {err.start}); save it as UTF-8"
        ) from None
    entries = _entries(path, text)
    if not entries:
        raise ConfigError(
            f"--manifest {path}: no jobs in it; add a [[job]] table (TOML) or a JSON object "
            "a line (JSONL)"
        )
    return entries


def _entries(path: Path, text: str) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        return _jsonl_entries(path, text)
    if path.suffix == ".toml":
        table = read_toml(path)
        unknown = sorted(set(table) - {"job"})
        if unknown:
            raise ConfigError(
                f"{path}: unknown key '{unknown[0]}' (a manifest holds [[job]] tables)"
            )
        jobs = table.get("job", [])
        if not isinstance(jobs, list) or not all(isinstance(j, dict) for j in jobs):
            raise ConfigError(f"{path}: 'job' must be an array of tables: [[job]]")
        return jobs
    raise UsageError(f"--manifest {path}: use a .toml or .jsonl file")


def _jsonl_entries(path: Path, text: str) -> list[dict[str, Any]]:
    entries = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}:{n}: not JSON ({err.msg})") from None
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}:{n}: each line must be a JSON object")
        entries.append(entry)
    return entries


@dataclass(frozen=True)
class Planned:
    """A manifest entry after checking: a job to run, or the error that stopped it."""

    label: str
    job: JobSpec | None
    error: FpkError | None = None


def plan_jobs(
    preset: Preset,
    entries: list[dict[str, Any]],
    flags: dict[str, Any],
    out: Path,
    where: Path | None,
    weights_identity: str = "",
) -> list[Planned]:
    """Resolve every entry; one bad entry becomes a failed job, not a failed batch."""
    planned = []
    base = where.parent if where is not None else None
    for i, entry in enumerate(entries, 1):
        label = str(entry.get("name") or f"job {i}")
        loc = f"{where} job {i}" if where is not None else "command line"
        try:
            job = resolve_job(preset, entry, flags, out, loc, weights_identity, base)
            planned.append(Planned(job.name, job))
        except FpkError as err:
            message = str(err) if where is None or loc in str(err) else f"{loc}: {err}"
            planned.append(Planned(label, None, type(err)(message)))
    counts = Counter(p.job.name for p in planned if p.job)  # linear: manifests of 100k jobs
    dupes = sorted(n for n, c in counts.items() if c > 1)
    if dupes:
        raise ConfigError(f"two jobs would write the same file '{dupes[0]}.mp4'; give each a name")
    return planned


def is_done(job: JobSpec) -> bool:
    """The output exists, is complete, and was made with the same resolved settings."""
    if not (job.output.is_file() and job.sidecar.is_file()):
        return False
    try:
        side = json.loads(job.sidecar.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return side.get("settings_hash") == job.settings_hash and _frames_in(job.output) == side.get(
        "frames"
    )


def _frames_in(path: Path) -> int | None:
    """Frame count from the mp4's header (no decoding)."""
    import av

    try:
        with av.open(str(path)) as container:
            return container.streams.video[0].frames or None
    except (av.error.FFmpegError, IndexError, OSError):
        return None
