"""Loading weights: the one place that reads checkpoints and calls `from_pretrained`.

Sources, in order: `--weights DIR` (the diffusers FramePack pipeline layout: `transformer/`,
`vae/`, `text_encoder/`, `tokenizer/`, `text_encoder_2/`, `tokenizer_2/`, `image_encoder/`,
`feature_extractor/`), the package's embedded weights (`embedded`), or Hugging Face repo ids
(local directory, the hub cache, offline mode honoured). Safetensors only: a pickle checkpoint
is refused, and no remote code is ever run.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fpk.config import Preset, get_schedule, schedules
from fpk.errors import EXIT_USAGE, UsageError, WeightsError
from fpk.model.packing import Kernel, Schedule, as_kernel
from fpk.model.transformer import (
    FramePackTransformer,
    inflate_projection,
    projection_name,
    transformer_config,
)

EMBEDDED_DIR = Path(__file__).resolve().parents[1] / "weights"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
TRANSFORMER_WEIGHTS = "diffusion_pytorch_model"
#: Architecture keys compared between a checkpoint's config.json and the preset.
ARCH_KEYS = (
    "num_attention_heads",
    "attention_head_dim",
    "num_layers",
    "num_single_layers",
    "num_refiner_layers",
    "patch_size",
    "patch_size_t",
    "in_channels",
    "text_embed_dim",
    "pooled_projection_dim",
    "image_proj_dim",
)
COMPONENTS = (
    "transformer",
    "vae",
    "text_encoder",
    "tokenizer",
    "text_encoder_2",
    "tokenizer_2",
    "image_encoder",
    "feature_extractor",
)


@dataclass
class Components:
    """Every model a pipeline needs, passed in, never global."""

    transformer: FramePackTransformer | None = None
    vae: Any = None
    text_encoder: Any = None
    tokenizer: Any = None
    text_encoder_2: Any = None
    tokenizer_2: Any = None
    image_encoder: Any = None
    feature_extractor: Any = None
    schedule: Schedule | None = None
    sources: dict[str, str] = field(default_factory=dict)
    new_keys: list[str] = field(default_factory=list)


# --- where weights are -------------------------------------------------------------------


def component_source(preset: Preset, name: str, weights_dir: Path | None) -> tuple[str, str | None]:
    """(path or repo id, subfolder) where component `name` of `preset` lives."""
    if weights_dir is not None:
        return str(weights_dir), name
    w = preset.weights
    repo = {
        "transformer": w.transformer,
        "image_encoder": w.image_encoder,
        "feature_extractor": w.image_encoder,
    }.get(name, w.components)
    if repo == "embedded":
        return str(EMBEDDED_DIR / preset.name), name
    if not repo:
        raise WeightsError(
            f"preset '{preset.name}' has no published weights for its {name}: "
            "pass --weights DIR with a folder in the diffusers FramePack layout"
        )
    return repo, (None if name == "transformer" else name)


def resolve(
    preset: Preset, name: str, weights_dir: Path | None, offline: bool | None = None
) -> Path:
    """Local folder holding component `name`: a directory, or a repo from the hub cache."""
    where, sub = component_source(preset, name, weights_dir)
    local = Path(where)
    if local.is_dir() or weights_dir is not None or where.startswith((".", "/", "~")):
        folder = local.expanduser() / sub if sub else local.expanduser()
        if not folder.is_dir():
            raise WeightsError(_missing(preset, name, str(folder)) + _looks_like(local))
        return folder
    return _from_hub(preset, name, where, sub, offline)


def _from_hub(preset: Preset, name: str, repo: str, sub: str | None, offline: bool | None) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    offline = constants.HF_HUB_OFFLINE if offline is None else offline
    patterns = [f"{sub}/*"] if sub else ["*.json", "*.safetensors"]
    try:
        root = snapshot_download(repo, allow_patterns=patterns, local_files_only=offline)
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError):
        raise MissingWeightsError(missing_message(preset, {repo})) from None
    folder = Path(root) / sub if sub else Path(root)
    if not folder.is_dir():
        raise MissingWeightsError(missing_message(preset, {repo}))
    return folder


def _missing(preset: Preset, name: str, where: str) -> str:
    return (
        f"weights for preset '{preset.name}' not found: no {name} folder at {where}; "
        "pass --weights DIR with the diffusers FramePack layout"
    )


def _looks_like(folder: Path) -> str:
    """What a --weights folder that lacks the layout looks like, if one component's folder."""
    if (folder / "config.json").is_file() or list(folder.glob("*.safetensors*")):
        return (f" ({folder} looks like one component's folder, e.g. the transformer's: pass the "
                "folder above it, which holds transformer/, vae/, text_encoder/, ...)")  # fmt: skip
    return ""


class MissingWeightsError(WeightsError):
    """A preset's published weights are not downloaded: bad input (exit 2), with the fix."""

    exit_code = EXIT_USAGE


def resolve_all(
    preset: Preset, weights_dir: Path | None, parts: Iterable[str], offline: bool | None = None
) -> dict[str, Path]:
    """The folder of every part; where published weights are missing, one error naming every
    repo the preset needs (missing or not), its size and its download command."""
    found: dict[str, Path] = {}
    missing: set[str] = set()
    for part in parts:
        try:
            found[part] = resolve(preset, part, weights_dir, offline)
        except MissingWeightsError:
            missing.add(component_source(preset, part, weights_dir)[0])
    if missing:
        raise MissingWeightsError(missing_message(preset, missing))
    return found


def hub_repos(preset: Preset) -> dict[str, tuple[list[str], float]]:
    """Each published repo `preset` loads from: the subfolders fpk takes and their size (GB)."""
    w = preset.weights
    sizes = {w.transformer: w.transformer_gb, w.components: w.components_gb,
             w.image_encoder: w.image_encoder_gb}  # fmt: skip
    repos: dict[str, tuple[list[str], float]] = {}
    for name in COMPONENTS:
        repo, sub = component_source(preset, name, None)
        if repo.count("/") == 1 and not repo.startswith((".", "/", "~")):
            subs = repos.setdefault(repo, ([], sizes.get(repo, 0.0)))[0]
            subs.extend([sub] if sub else [])
    return repos


def missing_message(preset: Preset, missing: set[str]) -> str:
    """The missing-weights error: the problem on the first line, one download line per repo."""
    repos = hub_repos(preset)
    total = sum(size for _, size in repos.values())
    lines = [
        f"weights for preset '{preset.name}' are not downloaded: {len(missing)} of "
        f"{len(repos)} repos missing (about {total:.1f} GB in all). Download them (or pass "
        "--weights DIR with the diffusers FramePack layout; unset HF_HUB_OFFLINE to let fpk "
        "download):"
    ]
    for repo, (subs, size) in repos.items():
        include = "".join(f' --include "{s}/*"' for s in subs)
        state = "missing" if repo in missing else "found"
        lines.append(f"  hf download {repo}{include}   # about {size:.1f} GB, {state}")
    return "\n".join(lines)


# --- checking files ----------------------------------------------------------------------


def safetensors_files(folder: Path, stem: str = TRANSFORMER_WEIGHTS) -> list[Path]:
    """The safetensors shards of a folder (via the index when sharded); refuses pickle."""
    index = folder / f"{stem}.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
            raise WeightsError(
                f"{index} is not a valid safetensors index; re-download it"
            ) from None
        files = [folder / s for s in shards]
        outside = [s for s in shards if not (folder / s).resolve().is_relative_to(folder.resolve())]
        if outside:
            raise WeightsError(
                f"{index} names shard '{outside[0]}' outside its folder; fpk reads only the "
                "folder's own files: re-download it"
            )
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise WeightsError(
                f"shard {missing[0]} named by {index.name} is missing; re-download it"
            )
        return files
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return files
    refuse_pickle(folder)
    raise WeightsError(f"no .safetensors weights in {folder}")


def refuse_pickle(folder: Path) -> None:
    """Raise if `folder` holds only pickle checkpoints: loading them can run arbitrary code."""
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise WeightsError(
            f"refusing pickle checkpoint {folder / pickles[0]}: fpk loads safetensors only "
            "(pickle can run arbitrary code); convert it with safetensors or download the "
            ".safetensors files"
        )


def read_state_dict(
    files: Iterable[Path], dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            part = load_file(str(f), device="cpu")
        except (SafetensorError, OSError) as err:
            raise WeightsError(
                f"{f} is truncated or not a safetensors file ({err}); re-download it"
            ) from None
        state.update(
            {k: v.to(dtype) if dtype and v.is_floating_point() else v for k, v in part.items()}
        )
    return state


# --- the transformer ---------------------------------------------------------------------


def checkpoint_schedule(folder: Path, preset: Preset) -> str:
    """The layout the weights in `folder` were trained with (fpk's config says; else preset)."""
    config = _read_config(folder)
    return config.get("fpk_schedule") or preset.weights.trained_schedule or preset.schedule.name


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise WeightsError(f"{path} is not valid JSON; re-download it") from None


def check_architecture(folder: Path, preset: Preset) -> None:
    config = _read_config(folder)
    for key in ARCH_KEYS:
        want = getattr(preset.architecture, key)
        if key in config and config[key] != want:
            raise WeightsError(
                f"checkpoint at {folder} is another architecture: {key} is {config[key]} there, "
                f"{want} in preset '{preset.name}'; pick the matching --preset"
            )


def load_transformer(
    folder: Path,
    preset: Preset,
    schedule: Schedule,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> tuple[FramePackTransformer, list[str]]:
    """The transformer of `preset` for `schedule`, weights from `folder`; returns new keys.

    Projections for kernels the checkpoint lacks are initialised from the nearest one it has
    (see `nearest_projection`) and listed as new keys.
    """
    files = safetensors_files(folder)
    check_architecture(folder, preset)
    state = read_state_dict(files, dtype)
    config = transformer_config(preset.architecture, schedule)
    # keep the checkpoint's own projections too, so that its state dict round-trips
    config["history_kernels"] = tuple(
        dict.fromkeys([*config["history_kernels"], *_ckpt_kernels(state)])
    )
    with torch.device("meta"):
        model = FramePackTransformer(**config)
    new_keys = _check_keys(model, state, folder)
    model.load_state_dict(state, strict=False, assign=True)
    _init_new_projections(model, state, new_keys, dtype)
    model.register_to_config(fpk_schedule=schedule.name)
    return model.to(device).eval(), new_keys


def _ckpt_kernels(state: dict[str, torch.Tensor]) -> list[Kernel]:
    """Kernels of the history projections in a checkpoint, read from the conv weight shapes."""
    return [
        as_kernel(v.shape[2:])
        for k, v in state.items()
        if k.startswith("clean_x_embedder.") and k.endswith(".weight") and v.dim() == 5
    ]


def _check_keys(model: torch.nn.Module, state: dict[str, torch.Tensor], folder: Path) -> list[str]:
    """Raise naming the first keys that do not fit; return the history projections to create."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    mismatched = [
        f"{k} {tuple(v.shape)} vs {want[k]}"
        for k, v in state.items()
        if k in want and tuple(v.shape) != want[k]
    ]
    unexpected = [k for k in state if k not in want]
    missing = [k for k in want if k not in state]
    new = [k for k in missing if k.startswith("clean_x_embedder.")]
    absent = [k for k in missing if k not in new]
    problems = [
        f"{label}: {', '.join(keys[:3])}"
        for label, keys in (
            ("shapes differ", mismatched),
            ("unexpected keys", unexpected),
            ("missing keys", absent),
        )
        if keys
    ]
    if new and not any(k.startswith("clean_x_embedder.") for k in state):
        problems.append("no history projection to start from")
    if problems:
        raise WeightsError(
            f"checkpoint at {folder} does not fit this architecture ({'; '.join(problems)})"
        )
    return new


def nearest_projection(kernel: Kernel, available: Iterable[Kernel]) -> Kernel:
    """The checkpoint kernel to start a new projection from.

    Prefer the largest kernel that divides `kernel` on every axis (the new weights are then an
    exact repeat of it); else the one closest in log-volume (trilinear resampling).
    """
    available = list(available)
    dividing = [k for k in available if all(n % a == 0 for n, a in zip(kernel, k, strict=True))]
    if dividing:
        return max(dividing, key=math.prod)
    return min(available, key=lambda k: abs(math.log(math.prod(k) / math.prod(kernel))))


def _init_new_projections(
    model: FramePackTransformer,
    state: dict[str, torch.Tensor],
    new_keys: list[str],
    dtype: torch.dtype,
) -> None:
    embedder = model.clean_x_embedder
    have = {
        k: getattr(embedder, projection_name(k))
        for k in _kernels_in(embedder)
        if f"clean_x_embedder.{projection_name(k)}.weight" in state
    }
    for kernel in _kernels_in(embedder):
        name = projection_name(kernel)
        if f"clean_x_embedder.{name}.weight" not in new_keys:
            continue
        conv = getattr(embedder, name)
        conv.to_empty(device="cpu")
        conv.to(dtype)
        inflate_projection(have[nearest_projection(kernel, have)], conv)


def _kernels_in(embedder: torch.nn.Module) -> list[Kernel]:
    return [as_kernel(m.kernel_size) for m in embedder.children() if isinstance(m, torch.nn.Conv3d)]


# --- everything --------------------------------------------------------------------------


def choose_layout(
    preset: Preset, requested: str | None, trained: str, allow_untrained: bool
) -> Schedule:
    """The packing layout to run: the one the weights were trained with, unless forced."""
    if requested is None or requested == trained:
        return get_schedule(trained) if trained in schedules() else preset.schedule
    if not allow_untrained:
        raise UsageError(
            f"the {preset.name} weights were trained with layout '{trained}', not '{requested}'; "
            "pass --allow-untrained-layout to run them anyway (quality will suffer)"
        )
    warnings.warn(
        f"running weights trained with layout '{trained}' on layout '{requested}'", stacklevel=2
    )
    return get_schedule(requested)


def load_components(
    preset: Preset,
    weights_dir: Path | None = None,
    *,
    parts: Iterable[str] = COMPONENTS,
    schedule: str | None = None,
    allow_untrained_layout: bool = False,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    offline: bool | None = None,
    on_load: Callable[[str, str], None] | None = None,
) -> Components:
    """Load the components of `preset` named in `parts`: the one function that loads weights.
    `on_load(name, folder)` is called before each component loads (for a progress display)."""
    parts = list(parts)
    unknown = [p for p in parts if p not in COMPONENTS]
    if unknown:
        raise UsageError(f"unknown component '{unknown[0]}' (valid: {', '.join(COMPONENTS)})")
    out = Components()
    for name, folder in resolve_all(preset, weights_dir, parts, offline).items():
        out.sources[name] = str(folder)
        if on_load is not None:
            on_load(name, str(folder))
        if name == "transformer":
            trained = checkpoint_schedule(folder, preset)
            out.schedule = choose_layout(preset, schedule, trained, allow_untrained_layout)
            out.transformer, out.new_keys = load_transformer(
                folder, preset, out.schedule, dtype, device
            )
        else:
            setattr(out, name, _load_pretrained(name, folder, dtype, device))
    return out


def image_processor_class() -> Any:
    """SigLIP's image processor; its PIL backend where present (no torchvision needed)."""
    import transformers

    return (
        getattr(transformers, "SiglipImageProcessorPil", None) or transformers.SiglipImageProcessor
    )


def _classes() -> dict[str, Any]:
    import transformers
    from diffusers import AutoencoderKLHunyuanVideo

    return {
        "vae": AutoencoderKLHunyuanVideo,
        "text_encoder": transformers.LlamaModel,
        "tokenizer": transformers.LlamaTokenizerFast,
        "text_encoder_2": transformers.CLIPTextModel,
        "tokenizer_2": transformers.CLIPTokenizer,
        "image_encoder": transformers.SiglipVisionModel,
        "feature_extractor": image_processor_class(),
    }


def _load_pretrained(
    name: str, folder: Path, dtype: torch.dtype, device: str | torch.device
) -> Any:
    """`from_pretrained` of the real class: safetensors only, never remote code."""
    cls = _classes()[name]
    is_model = isinstance(cls, type) and issubclass(cls, torch.nn.Module)
    if is_model:
        if not list(folder.glob("*.safetensors")):
            refuse_pickle(folder)
            raise WeightsError(f"no .safetensors weights for {name} in {folder}")
    kwargs: dict[str, Any] = {"local_files_only": True}
    if is_model:
        kwargs.update(use_safetensors=True, torch_dtype=dtype)
    try:
        with _quiet_hub():
            obj = cls.from_pretrained(str(folder), **kwargs)
    except (OSError, ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"cannot load {name} from {folder}: {first}") from None
    return obj.to(device).eval() if is_model else obj


class _quiet_hub:
    """Keep transformers/diffusers from printing progress bars and advice while loading:
    the library never prints; events and errors carry what the user needs."""

    def __enter__(self) -> None:
        from diffusers.utils import logging as dlog
        from transformers.utils import logging as tlog

        self._levels = (dlog.get_verbosity(), tlog.get_verbosity())
        for log in (dlog, tlog):
            log.set_verbosity_error()
            log.disable_progress_bar()

    def __exit__(self, *exc: object) -> None:
        from diffusers.utils import logging as dlog
        from transformers.utils import logging as tlog

        for log, level in zip((dlog, tlog), self._levels, strict=True):
            log.set_verbosity(level)
            log.enable_progress_bar()
