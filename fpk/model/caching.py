"""Step caches (`--cache`): skip the transformer's blocks on denoising steps whose input
barely changed, reusing the last computed step's residual (output minus input of the blocks).

- `teacache[:T]` (TeaCache, Liu et al. 2024, as the official FramePack code runs it): the
  relative L1 change of the first block's modulated input, rescaled by a polynomial fitted for
  HunyuanVideo (TEACACHE_COEFFICIENTS, FramePack's own), is accumulated; the blocks run again
  once it reaches T (default 0.15, the official demo's), and always at the first and last step.
- `magcache:T` (MagCache, Ma et al. 2025): diffusers' hooks, with magnitude ratios per step
  that `fpk calibrate` measures for a preset (presets/calibration.json; `MagCalibration`,
  run through the same per-call hook as TeaCache: a "calibrate" CacheSpec).
- `fbcache:T` (first-block cache, ParaAttention): diffusers' hooks: the first block always
  runs; the rest are skipped while its residual changed by less than T.

Each section is a new denoising run: `SectionCache` resets every state at its start, and keeps
one state per branch (the prompt's and the negative prompt's, under real CFG).
`ForwardCounter` counts the forwards that ran the blocks (what a cache saves).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fpk.errors import UsageError

CACHES = ("none", "teacache", "magcache", "fbcache")
# teacache: the official FramePack demo's; magcache, fbcache: the least that saves >= 1.8x of
# the forwards on the tiny preset (benchmarks/caches.py; diffusers' defaults, 0.06 and 0.05,
# save 1.3x and 1.2x there)
DEFAULT_THRESHOLD = {"teacache": 0.15, "magcache": 0.2, "fbcache": 0.1}
TEACACHE_COEFFICIENTS = (7.33226126e02, -4.01131952e02, 6.75869174e01, -3.14987800e00,
                         9.61237896e-02)  # fmt: skip
MAGCACHE_MAX_SKIP = 3  # consecutive steps MagCache may skip (its paper's K)
MAGCACHE_RETENTION = 0.2  # share of the first steps MagCache never skips
CALIBRATION = Path(__file__).resolve().parents[1] / "presets" / "calibration.json"


@dataclass(frozen=True)
class CacheSpec:
    kind: str = "none"
    threshold: float = 0.0

    def __str__(self) -> str:
        return self.kind if self.kind == "none" else f"{self.kind}:{self.threshold:g}"


def parse_cache(text: str) -> CacheSpec:
    """ "none", "teacache", "teacache:0.2", ... -> CacheSpec; one clear error otherwise."""
    kind, _, value = str(text).partition(":")
    if kind == "calibrate" and not value:  # fpk calibrate's own: MagCalibration, no skipping
        return CacheSpec("calibrate")
    if kind not in CACHES:
        raise UsageError(f"--cache '{text}': give one of {', '.join(CACHES)} (e.g. teacache:0.15)")
    if kind == "none":
        if value:
            raise UsageError("--cache none takes no threshold")
        return CacheSpec()
    try:
        threshold = float(value) if value else DEFAULT_THRESHOLD[kind]
    except ValueError:
        raise UsageError(f"--cache {text}: the threshold after ':' must be a number") from None
    if not 0 < threshold <= 10:
        raise UsageError(f"--cache {text}: give a threshold between 0 and 10")
    return CacheSpec(kind, threshold)


# --- TeaCache (fpk's own: diffusers has no hook for it) ------------------------------------


@dataclass
class TeaCacheState:
    """One branch of one section: what TeaCache decides from (FramePack's arithmetic)."""

    threshold: float
    steps: int
    count: int = 0
    accumulated: float = 0.0
    previous: torch.Tensor | None = None
    residual: torch.Tensor | None = None

    def skip(self, modulated: torch.Tensor) -> bool:
        """Whether this step may reuse `residual` (the first and last steps never do)."""
        compute = self.count in (0, self.steps - 1) or self.previous is None
        if not compute:
            change = (modulated - self.previous).abs().mean() / self.previous.abs().mean()
            self.accumulated += float(np.polyval(TEACACHE_COEFFICIENTS, float(change)))
            compute = self.accumulated >= self.threshold
        if compute:
            self.accumulated = 0.0
        self.previous = modulated
        self.count += 1
        return not compute and self.residual is not None


@dataclass
class MagCalibration:
    """MagCache's calibration of one branch of one section: no step is skipped; each step's
    ratio is the mean over tokens of |residual| / |previous residual| (1 at the first step),
    as MagCache defines it. Set as the model's step hook like TeaCacheState."""

    ratios: list[float] = field(default_factory=list)
    previous: torch.Tensor | None = None

    def skip(self, modulated: torch.Tensor) -> bool:
        return False

    @property
    def residual(self) -> torch.Tensor | None:
        return self.previous

    @residual.setter
    def residual(self, value: torch.Tensor) -> None:
        if self.previous is None:
            self.ratios.append(1.0)
        else:
            now, before = (torch.linalg.norm(r.float(), dim=-1) for r in (value, self.previous))
            self.ratios.append(float((now / (before + 1e-8)).mean()))
        self.previous = value


# --- per section ---------------------------------------------------------------------------


@dataclass
class SectionCache:
    """The cache of one section's denoising: `branch(name)` around each transformer call."""

    model: torch.nn.Module
    spec: CacheSpec
    steps: int
    preset: str = "tiny"
    tea: dict = field(default_factory=dict)  # branch -> TeaCacheState or MagCalibration

    def __post_init__(self) -> None:
        use_cache(self.model, self.spec, self.steps, self.preset)
        if self.spec.kind in ("magcache", "fbcache"):
            self.model._reset_stateful_cache()

    def _state(self):
        if self.spec.kind == "calibrate":  # kept on the model for fpk calibrate to read
            state = MagCalibration()
            self.model.__dict__.setdefault("_fpk_calibrations", []).append(state)
            return state
        return TeaCacheState(self.spec.threshold, self.steps)

    @contextlib.contextmanager
    def branch(self, name: str) -> Iterator[None]:
        if self.spec.kind in ("teacache", "calibrate"):
            if name not in self.tea:
                self.tea[name] = self._state()
            self.model._fpk_teacache = self.tea[name]
            try:
                yield
            finally:
                self.model._fpk_teacache = None
        elif self.spec.kind in ("magcache", "fbcache"):
            with self.model.cache_context(name):
                yield
        else:
            yield


def use_cache(model, spec: CacheSpec, steps: int, preset: str = "tiny",
              ratios: list[float] | None = None) -> None:  # fmt: skip
    """Enable `spec`'s diffusers hooks on `model` (replacing another job's), or none;
    MagCache with `ratios` or else `preset`'s calibrated ones."""
    current = getattr(model, "_fpk_cache", None)
    wanted = (spec, steps) if spec.kind in ("magcache", "fbcache") else None
    if current == wanted:
        return
    if current is not None:
        model.disable_cache()
    model._fpk_cache = None
    if wanted is None:
        return
    from diffusers.hooks import FirstBlockCacheConfig, MagCacheConfig

    if spec.kind == "fbcache":
        config = FirstBlockCacheConfig(threshold=spec.threshold)
    else:
        config = MagCacheConfig(
            threshold=spec.threshold, max_skip_steps=MAGCACHE_MAX_SKIP,
            retention_ratio=MAGCACHE_RETENTION, num_inference_steps=steps,
            mag_ratios=ratios or magcache_ratios(preset),
        )  # fmt: skip
    model.enable_cache(config)
    model._fpk_cache = wanted


def magcache_ratios(name: str) -> list[float]:
    """The calibrated magnitude ratios of preset `name` (`fpk calibrate`)."""
    table = json.loads(CALIBRATION.read_text()) if CALIBRATION.is_file() else {}
    if name not in table:
        raise UsageError(
            f"--cache magcache: preset {name} has no calibrated magnitude ratios; run "
            f"`fpk calibrate --preset {name}` first (or use teacache or fbcache)"
        )
    return list(table[name]["magcache"]["ratios"])


def save_ratios(preset: str, steps: int, ratios: list[float], note: str,
                path: Path = CALIBRATION) -> None:  # fmt: skip
    """Store `preset`'s MagCache ratios (one per step) in the calibration file."""
    table = json.loads(path.read_text()) if path.is_file() else {}
    table[preset] = {"magcache": {"steps": steps, "ratios": [round(r, 5) for r in ratios],
                                  "note": note}}  # fmt: skip
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(table, indent=1) + "\n")
    tmp.replace(path)


class ForwardCounter:
    """Counts the transformer forwards that ran its blocks (a hook on the last block's first
    projection, a layer only a computed step reaches)."""

    def __init__(self, model: torch.nn.Module) -> None:
        blocks = list(model.single_transformer_blocks) or list(model.transformer_blocks)
        self.computed = 0
        self._handle = blocks[-1].attn.to_q.register_forward_hook(self._count)

    def _count(self, *_) -> None:
        self.computed += 1

    def close(self) -> None:
        self._handle.remove()
