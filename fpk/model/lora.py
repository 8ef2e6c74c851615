"""LoRAs people share, applied to fpk's transformer: the key formats detected from the keys,
normalised to diffusers/PEFT names, loaded with diffusers' PEFT integration and fused.

Formats (safetensors only):
- diffusers/PEFT: `[transformer.|base_model.model.]MODULE.lora_A.weight` / `lora_B`;
- musubi-tuner / kohya: `lora_unet_MODULE_WITH_UNDERSCORES.lora_down.weight` / `lora_up`,
  `.alpha`;
- diffusion-pipe / ComfyUI: `diffusion_model.MODULE.lora_A.weight` (or `lora_down`/`lora_up`),
  where MODULE is diffusers' name or the original HunyuanVideo one (`double_blocks.0.img_attn_qkv`,
  converted by diffusers' own HunyuanVideo converter).

A kohya `alpha` is folded into lora_B (scale alpha / rank), so every adapter runs at scale 1
times its weight. Keys that match no module of the transformer are refused with a count and
examples. `LoraState` keeps what is fused: between jobs with other LoRAs it unfuses (the base
weights come back exactly as they were, within float rounding) and fuses the new set; the base
weights are never reloaded.
"""

from __future__ import annotations

import functools
import hashlib
import re
import warnings
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

import torch

from fpk.errors import UsageError

PEFT_PREFIXES = ("transformer.", "base_model.model.", "diffusion_model.")
KOHYA_PREFIX = "lora_unet_"
ORIGINAL_HUNYUAN = ("img_attn_qkv", "double_blocks.", "single_blocks.", "txt_in.")


@dataclass(frozen=True)
class LoraRef:
    """One LoRA of a job: its file, its weight, and its content hash (what the settings hash
    and the sidecar record)."""

    path: Path
    weight: float
    sha256: str

    @property
    def adapter(self) -> str:
        return f"lora_{self.sha256[:16]}"

    def as_dict(self) -> dict:
        return {"path": str(self.path), "weight": self.weight, "sha256": self.sha256}


def parse_lora(text: str, base: Path | None = None) -> LoraRef:
    """ "PATH[:WEIGHT]" (weight 1 by default) -> LoraRef, the file checked and hashed."""
    path_text, weight = text, 1.0
    head, sep, tail = text.rpartition(":")
    if sep and head and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)", tail):
        path_text, weight = head, float(tail)
    path = Path(path_text).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    if not path.is_file():
        raise UsageError(
            f"--lora {path}: no such file; give PATH[:WEIGHT], e.g. style.safetensors:0.8"
        )
    if path.suffix != ".safetensors":
        raise UsageError(f"--lora {path}: only .safetensors LoRAs are read (never pickle files)")
    if not -10 <= weight <= 10:
        raise UsageError(f"--lora {text}: weight {weight} is outside -10..10")
    return LoraRef(path, weight, file_sha256(path))


def file_sha256(path: Path) -> str:
    """The sha256 of a file's content, read in 1 MB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_lora(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise UsageError(f"--lora {path}: not a readable safetensors file ({err})") from None


def detect_format(keys: list[str]) -> str:
    """ "kohya", "original" (HunyuanVideo names) or "peft", from the keys."""
    if any(k.startswith(KOHYA_PREFIX) for k in keys):
        return "kohya"
    if any(part in k for k in keys for part in ORIGINAL_HUNYUAN):
        return "original"
    return "peft"


def to_peft(state: dict[str, torch.Tensor], modules: AbstractSet[str], where: Path) -> dict:
    """`state` in any supported format -> `{MODULE.lora_A.weight, MODULE.lora_B.weight}` for
    MODULEs of the transformer; alpha folded into lora_B. Unmatched keys are refused."""
    fmt = detect_format(list(state))
    pairs = _kohya_pairs(state, modules) if fmt == "kohya" else _peft_pairs(state, fmt)
    unknown = sorted(m for m in pairs if m not in modules)
    if unknown:
        raise UsageError(
            f"--lora {where}: {len(unknown)} of {len(pairs)} LoRA modules match nothing in the "
            f"transformer ({fmt} format), e.g. {', '.join(unknown[:3])}; is it a LoRA for "
            "HunyuanVideo/FramePack?"
        )
    out = {}
    for module, (down, up, alpha) in pairs.items():
        if down is None or up is None:
            raise UsageError(f"--lora {where}: module {module} lacks its down or up matrix")
        scale = 1.0 if alpha is None else float(alpha) / down.shape[0]
        out[f"{module}.lora_A.weight"] = down
        out[f"{module}.lora_B.weight"] = up * scale
    return out


def _pairs_from(items, name_of) -> dict[str, list]:
    pairs: dict[str, list] = {}
    for key, value in items:
        module, part = name_of(key)
        slot = {"down": 0, "up": 1, "alpha": 2}.get(part)
        if module is None or slot is None:
            continue
        pairs.setdefault(module, [None, None, None])[slot] = value
    return pairs


_PARTS = {"lora_A.weight": "down", "lora_down.weight": "down", "lora_B.weight": "up",
          "lora_up.weight": "up", "alpha": "alpha"}  # fmt: skip


def _split(key: str) -> tuple[str | None, str | None]:
    for suffix, part in _PARTS.items():
        if key.endswith("." + suffix):
            return key[: -len(suffix) - 1], part
    return None, None


def _peft_pairs(state: dict[str, torch.Tensor], fmt: str) -> dict[str, list]:
    stripped = {}
    for key, value in state.items():
        for prefix in PEFT_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        stripped[key.replace(".lora_down.weight", ".lora_A.weight")
                 .replace(".lora_up.weight", ".lora_B.weight")] = value  # fmt: skip
    if fmt == "original":
        from diffusers.loaders.lora_conversion_utils import (
            _convert_hunyuan_video_lora_to_diffusers as convert,
        )

        stripped = {k.removeprefix("transformer."): v for k, v in convert(stripped).items()}
    return _pairs_from(stripped.items(), _split)


def _kohya_pairs(state: dict[str, torch.Tensor], modules: AbstractSet[str]) -> dict[str, list]:
    by_flat = {m.replace(".", "_"): m for m in modules}

    def name_of(key: str):
        flat, part = _split(key.removeprefix(KOHYA_PREFIX))
        if flat is None:
            return None, None
        return by_flat.get(flat, flat), part

    return _pairs_from(state.items(), name_of)


def check_lora(ref: LoraRef, preset) -> None:
    """Before any weights load: every key of `ref` names a layer of `preset`'s transformer."""
    to_peft(read_lora(ref.path), _preset_modules(preset.architecture), ref.path)


@functools.lru_cache(maxsize=8)
def _preset_modules(arch) -> frozenset[str]:
    """The Linear layers of an architecture, from a model on the meta device (no memory)."""
    from fpk.config import get_schedule
    from fpk.model.transformer import FramePackTransformer, transformer_config

    with torch.device("meta"):
        model = FramePackTransformer(**transformer_config(arch, get_schedule("released")))
    return frozenset(lora_modules(model))


def lora_modules(model: torch.nn.Module) -> set[str]:
    """Names of the transformer's Linear layers: what a LoRA may adapt (a layer PEFT already
    wraps keeps its own name; the wrapper's parts are not layers of the model)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    names = set()
    for name, module in model.named_modules():
        if isinstance(module, BaseTunerLayer):
            names.add(name)
        elif isinstance(module, torch.nn.Linear) and not _inside_adapter(name):
            names.add(name)
    return names


def _inside_adapter(name: str) -> bool:
    parts = name.split(".")
    return "base_layer" in parts or any(p.startswith("lora_") for p in parts)


class LoraState:
    """The LoRAs active in one transformer now (fused or not); `use` makes it a job's set."""

    def __init__(self) -> None:
        self.active: tuple[LoraRef, ...] = ()
        self.fused = False
        self.loaded: set[str] = set()

    def use(self, model, loras: tuple[LoraRef, ...], fuse: bool = True) -> None:
        """Activate `loras` (with their weights), fused into the weights unless `fuse` is
        False; () gives the base model back. Adapters load once and stay for later jobs."""
        if loras == self.active and (fuse == self.fused or not loras):
            return
        if self.fused:
            model.unfuse_lora()
            self.fused = False
        if self.loaded:
            model.disable_lora()
        self.active = ()
        if not loras:
            return
        modules = lora_modules(model)
        for ref in loras:
            if ref.adapter not in self.loaded:
                state = to_peft(read_lora(ref.path), modules, ref.path)
                with warnings.catch_warnings():  # PEFT matches target names by suffix and
                    # says so for layers it wraps with no weights given (they add nothing)
                    warnings.filterwarnings("ignore", "While injecting the PEFT adapters")
                    warnings.filterwarnings("ignore", "Already found a `peft_config`")
                    model.load_lora_adapter(state, adapter_name=ref.adapter, prefix=None)
                self.loaded.add(ref.adapter)
        names = [r.adapter for r in loras]
        model.enable_lora()
        model.set_adapters(names, [r.weight for r in loras])
        if fuse:
            model.fuse_lora(adapter_names=names)
        self.active, self.fused = loras, fuse
