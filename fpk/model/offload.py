"""Where every model lives under a GPU memory budget: a pure planner over byte counts, and
its execution with diffusers' and accelerate's offloading hooks.

Modes, fastest first (`--offload`):
- `none`: every component stays on the GPU;
- `model`: one component on the GPU at a time (the one running), the others in CPU memory
  (accelerate's CPU-offload hooks, as diffusers' `enable_model_cpu_offload`);
- `group`: as `model`, and the transformer's blocks come to the GPU k at a time while it runs,
  the next group copied on a CUDA stream while the current one computes (diffusers' group
  offloading, block level, pinned memory); any other component too big for `model` is
  grouped the same way;
- `sequential`: every layer comes to the GPU only for its own forward (diffusers' group
  offloading, leaf level): the least memory, the most copying.

`plan_memory(needs, budget)` picks the fastest mode (and for `group` the largest k) whose peak
fits `--vram GB`, and VAE tiling where the untiled decode would not fit. Its arithmetic is
exact over the `Needs` it is given; the weights are counted exactly from the models, the
working sets (activations of one section, a VAE decode) are estimates (`working_sets`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fpk.errors import UsageError
from fpk.media import decoding

MODES = ("none", "model", "group", "sequential")  # fastest first
ATTENTION = {  # --attention name -> diffusers' attention backend (never a hub download)
    "sdpa": "native", "flash": "flash", "flash3": "_flash_3", "sage": "sage",
    "xformers": "xformers", "flex": "flex",
}  # fmt: skip
AUTO_ATTENTION = ("flash3", "sage", "flash", "sdpa")  # `auto` on a GPU: the first installed
GB = 1 << 30
ACTIVATION_FACTOR = 12  # live (tokens x width) tensors at a block's peak: MLP in/out and 4x
VAE_TILE = (256, 256, 16)  # diffusers' HunyuanVideo VAE tile: height, width, pixel frames
ENCODER_TOKENS = 1024  # an encoder's sequence, generously (Llama: <= 256 + template; SigLIP 729)


@dataclass(frozen=True)
class DeviceOptions:
    """How the models run, as the user asked: `--offload`, `--vram GB` (None: the GPU's own
    size where there is a GPU, no limit on a CPU), `--fp8` (transformer weights stored in
    float8_e4m3fn, computed in the run's dtype, by diffusers' layerwise casting) and
    `--attention` (a name of ATTENTION, through diffusers' attention dispatcher) and
    `--compile` (diffusers' `compile_repeated_blocks`: each block compiled where it first
    runs, so the first step of a run pays the compile time)."""

    offload: str = "auto"
    vram: float | None = None
    fp8: bool = False
    attention: str = "auto"
    compile: bool = False  # regional torch.compile of the repeated blocks (dynamic shapes)

    def __post_init__(self) -> None:
        if self.attention not in ("auto", *ATTENTION):
            raise UsageError(
                f"--attention '{self.attention}' is not one of auto, {', '.join(ATTENTION)}"
            )
        if self.offload not in ("auto", *MODES):
            raise UsageError(f"--offload '{self.offload}' is not one of auto, {', '.join(MODES)}")
        if self.vram is not None and not 0 < self.vram <= 4096:
            raise UsageError(f"--vram {self.vram}: give the GPU memory to use in GB, e.g. 8")

    def planned(self, device: torch.device) -> bool:
        """Whether placement needs a plan (else every model simply goes to `device`)."""
        return (
            self.vram is not None
            or self.offload not in ("auto", "none")
            or (self.offload == "auto" and device.type == "cuda")
        )

    def budget(self, device: torch.device) -> int | None:
        if self.vram is not None:
            return int(self.vram * GB)
        if device.type == "cuda":
            return torch.cuda.get_device_properties(device).total_memory
        return None


def pick_attention(name: str, device: torch.device) -> str:
    """diffusers' backend for `--attention name`: `auto` is the first of AUTO_ATTENTION whose
    package is installed (on a GPU; SDPA on a CPU); a named one whose package is missing says
    which to install (diffusers' own requirement check)."""
    from diffusers.models.attention_dispatch import (
        AttentionBackendName,
        _check_attention_backend_requirements,
    )

    if name == "auto" and device.type != "cuda":
        return ATTENTION["sdpa"]
    for candidate in AUTO_ATTENTION if name == "auto" else (name,):
        try:
            _check_attention_backend_requirements(AttentionBackendName(ATTENTION[candidate]))
            return ATTENTION[candidate]
        except RuntimeError as err:
            if name != "auto":
                raise UsageError(f"--attention {name}: {err}") from None
    return ATTENTION["sdpa"]


def fmt_bytes(n: int) -> str:
    return f"{n / GB:.1f} GB" if n >= GB // 10 else f"{n / (1 << 20):.1f} MB"


@dataclass(frozen=True)
class Part:
    """One component's memory: weights (bytes) in top-level blocks (what block-level group
    offloading moves k at a time) and the rest, its largest single layer, and its working set
    while it runs (`tiled`: the working set with VAE tiling, where it has one)."""

    name: str
    blocks: tuple[int, ...]
    rest: int
    largest_leaf: int
    working: int
    tiled: int | None = None

    @property
    def weights(self) -> int:
        return sum(self.blocks) + self.rest


@dataclass(frozen=True)
class Placement:
    """How one component is placed: "resident", "model", ("group", k) or "leaf"."""

    level: str
    blocks_per_group: int = 0
    tiled: bool = False


@dataclass(frozen=True)
class Plan:
    mode: str
    parts: dict[str, Placement] = field(default_factory=dict)
    peak: int = 0  # bytes on the GPU at most, by the needs' accounting

    def describe(self) -> str:
        t = self.parts.get("transformer")
        group = f", {t.blocks_per_group} blocks a group" if t and t.level == "group" else ""
        tiling = ", VAE tiling" if any(p.tiled for p in self.parts.values()) else ""
        return f"offload {self.mode}{group}{tiling}: GPU peak about {fmt_bytes(self.peak)}"


def part_peak(part: Part, place: Placement) -> int:
    """GPU bytes while `part` runs placed as `place` (group: two groups, the one computing
    and the one being copied in)."""
    working = part.tiled if place.tiled and part.tiled is not None else part.working
    if place.level in ("resident", "model"):
        return part.weights + working
    if place.level == "group":
        return part.rest + 2 * _widest(part.blocks, place.blocks_per_group) + working
    return 2 * part.largest_leaf + working


def _widest(blocks: tuple[int, ...], k: int) -> int:
    """The largest sum of k consecutive blocks (the groups start at 0, k, 2k, ...)."""
    if not blocks:
        return 0
    return max(sum(blocks[i : i + k]) for i in range(0, len(blocks), k))


def plan_peak(parts: list[Part], placements: dict[str, Placement]) -> int:
    """Peak GPU bytes of a whole plan: resident parts always, plus the largest running one."""
    resident = sum(p.weights for p in parts if placements[p.name].level == "resident")
    running = 0
    for p in parts:
        place = placements[p.name]
        extra = part_peak(p, place) - (p.weights if place.level == "resident" else 0)
        running = max(running, extra)
    return resident + running


def _fit(part: Part, budget: int | None, level: str, k: int = 0) -> Placement | None:
    """`part` placed at `level` (untiled, else tiled) within `budget`, or None."""
    for tiled in (False, True) if part.tiled is not None else (False,):
        place = Placement(level, k, tiled)
        if budget is None or part_peak(part, place) <= budget:
            return place
    return None


def _place(part: Part, mode: str, budget: int | None, k: int) -> Placement | None:
    """`part`'s placement in `mode`: the transformer as the mode says (k blocks a group);
    in `group` mode another part by model offload where it fits, else grouped (largest k
    first), else leaf by leaf."""
    if mode == "none":
        return _fit(part, budget, "resident")
    if mode == "sequential":
        return _fit(part, budget, "leaf")
    if part.name == "transformer" and mode == "group":
        return _fit(part, budget, "group", k)
    found = _fit(part, budget, "model")
    if found or mode == "model":
        return found
    for j in range(len(part.blocks), 0, -1):
        found = _fit(part, budget, "group", j)
        if found:
            return found
    return _fit(part, budget, "leaf")


def _mode_plan(parts: list[Part], mode: str, budget: int | None, k: int = 1) -> Plan | None:
    """The plan of `mode` within `budget`, or None."""
    if mode == "none":  # all resident: the budget is for all of them together
        for tiled in (False, True):
            placements = {p.name: Placement("resident", tiled=tiled) for p in parts}
            peak = plan_peak(parts, placements)
            if budget is None or peak <= budget:
                return Plan(mode, placements, peak)
        return None
    placements = {}
    for p in parts:
        found = _place(p, mode, budget, k)
        if found is None:
            return None
        placements[p.name] = found
    return Plan(mode, placements, plan_peak(parts, placements))


def plan_memory(parts: list[Part], budget: int | None, mode: str = "auto") -> Plan:
    """The fastest plan within `budget` bytes (None: no limit) in `mode` ("auto": any);
    UsageError naming the smallest budget that fits where none does."""
    if mode not in ("auto", *MODES):
        raise UsageError(f"--offload '{mode}' is not one of auto, {', '.join(MODES)}")
    if budget is None and mode == "auto":
        mode = "none"
    modes = MODES if mode == "auto" else (mode,)
    for m in modes:
        for k in reversed(_ks(parts, m)):
            plan = _mode_plan(parts, m, budget, k)
            if plan is not None:
                return plan
    assert budget is not None  # with no limit every mode has a plan
    need = minimum_budget(parts, modes[-1])
    which = "any plan" if mode == "auto" else f"--offload {mode}"
    hint = "" if mode in ("auto", "sequential") else "; or try --offload sequential"
    raise UsageError(
        f"--vram {fmt_bytes(budget)} is below what {which} fits: give at least "
        f"{fmt_bytes(need)}{hint}"
    )


def minimum_budget(parts: list[Part], mode: str = "sequential") -> int:
    """The smallest budget `mode` fits in: the least peak over its plans."""

    def fits(budget: int) -> bool:
        return any(_mode_plan(parts, mode, budget, k) for k in _ks(parts, mode))

    # an upper bound that fits: double buffering never needs more than twice the weights
    hi = max(1, 2 * sum(p.weights for p in parts) + max((p.working for p in parts), default=0))
    while not fits(hi):
        hi *= 2
    lo = 0
    while lo < hi:  # fits(budget) is monotone in the budget: bisect on bytes
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _ks(parts: list[Part], mode: str) -> range:
    blocks = len(next((p.blocks for p in parts if p.name == "transformer"), ()))
    return range(1, max(1, blocks) + 1) if mode == "group" else range(1, 2)


# --- counting a real (or meta-device) model ---------------------------------------------


def count_part(name: str, module: torch.nn.Module, working: int, tiled: int | None = None) -> Part:
    """A module's Part (a meta-device one counts too): its top-level ModuleList children as
    blocks (as diffusers' block-level group offloading groups them), the rest, its largest
    leaf, each in the bytes of its tensors' dtypes."""

    def size(m: torch.nn.Module, recurse: bool = True) -> int:
        tensors = [*m.parameters(recurse=recurse), *m.buffers(recurse=recurse)]
        return sum(t.numel() * t.element_size() for t in tensors)

    blocks = []
    for child in module.children():
        if isinstance(child, torch.nn.ModuleList | torch.nn.Sequential):
            blocks += [size(b) for b in child]
    leaf = max((size(m, recurse=False) for m in module.modules()), default=0)
    return Part(name, tuple(blocks), size(module) - sum(blocks), leaf, working, tiled)


def working_sets(components, preset, resolution, dtype_bytes: int, cfg: bool) -> dict[str, int]:
    """Estimated working sets (bytes) of each model of `components` for one section at
    `resolution`: the transformer's tokens x width x ACTIVATION_FACTOR (x2 with real CFG); the
    VAE's decode of one chunk's pixel frames (fpk.media.decoding.span_for; a temporal tile
    where it decodes framewise) x its widest channels x VAE_FACTOR, untiled and tiled; an
    encoder's ENCODER_TOKENS x its width x ACTIVATION_FACTOR."""
    from fpk.model.accounting import context_report

    arch = preset.architecture
    width = arch.num_attention_heads * arch.attention_head_dim
    tokens = context_report(preset, resolution, with_parameters=False).total_tokens
    tokens += ENCODER_TOKENS  # the prompt's and the image's tokens join the sequence
    out = {"transformer": tokens * width * dtype_bytes * ACTIVATION_FACTOR * (2 if cfg else 1)}
    if components.vae is not None:
        res = resolution or preset.sampling.resolution
        window, t = preset.sampling.window, preset.vae.temporal_compression
        per_frame = decoding.frame_bytes(components.vae, res.height, res.width, dtype_bytes)
        span = decoding.span_for(per_frame, window, window, preset.vae.framewise_decoding, t)
        h, w, f = VAE_TILE
        frames = decoding.pixel_frames(span, t)
        if preset.vae.framewise_decoding:  # diffusers decodes it in temporal tiles
            frames = min(frames, f + 1)
        out["vae"] = frames * per_frame
        tile = min(res.height, h) * min(res.width, w) / (res.height * res.width)
        out["vae_tiled"] = int(min(frames, f + 1) * per_frame * tile)
    for name in ("text_encoder", "text_encoder_2", "image_encoder"):
        module = getattr(components, name, None)
        if module is not None:
            hidden = getattr(module.config, "hidden_size", None) or module.config.vision_config
            out[name] = ENCODER_TOKENS * int(hidden) * dtype_bytes * ACTIVATION_FACTOR
    return out


def parts_of(components, preset, resolution, dtype_bytes: int, cfg: bool = False) -> list[Part]:
    """Parts of every loaded model of `components` (fpk.model.loading.Components)."""
    ws = working_sets(components, preset, resolution, dtype_bytes, cfg)
    return [
        count_part(
            name,
            getattr(components, name),
            ws[name],
            ws.get("vae_tiled") if name == "vae" else None,
        )
        for name in MODELS
        if getattr(components, name, None) is not None
    ]


MODELS = ("text_encoder", "text_encoder_2", "image_encoder", "transformer", "vae")


# --- executing a plan ---------------------------------------------------------------------


class _OneAtATime:
    """accelerate's CPU-offload hooks for the `model`-placed components, with one rule: the
    one about to run sends the previous one back to the CPU (diffusers' pipelines chain
    them in a fixed order; fpk's sections alternate transformer and VAE)."""

    def __init__(self) -> None:
        self.hooks: dict[str, object] = {}
        self.current: str | None = None

    def add(self, name: str, module: torch.nn.Module, device: torch.device) -> None:
        from accelerate import cpu_offload_with_hook

        _, hook = cpu_offload_with_hook(module, execution_device=device)
        self.hooks[name] = hook
        module.register_forward_pre_hook(lambda *_: self.switch(name))
        for method in ("encode", "decode", "prepare"):  # run outside forward: the VAE's
            # encode/decode, the transformer's per-section prepare
            if hasattr(module, method):
                setattr(module, method, self._switching(name, module, getattr(module, method)))

    def _switching(self, name: str, module: torch.nn.Module, fn):
        def call(*args, **kwargs):
            self.switch(name)
            module._hf_hook.pre_forward(module)  # onto the GPU (a no-op where it is)
            return fn(*args, **kwargs)

        return call

    def switch(self, name: str) -> None:
        if self.current not in (None, name):
            self.hooks[self.current].offload()
        self.current = name


def place_components(
    components, preset, spec: DeviceOptions, device: torch.device, dtype
) -> Plan | None:
    """`components` (loaded on the CPU where `spec.planned`) cast and placed as `spec` asks;
    the plan, or None where everything simply went to `device`."""
    backend = pick_attention(spec.attention, device)
    if backend != ATTENTION["sdpa"] and components.transformer is not None:
        components.transformer.set_attention_backend(backend)
    if spec.fp8 and components.transformer is not None:
        components.transformer.enable_layerwise_casting(
            storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype
        )
    plan = None
    if spec.planned(device):
        item = torch.empty((), dtype=dtype).element_size()
        parts = parts_of(components, preset, None, item, cfg=preset.sampling.cfg > 1)
        plan = plan_memory(parts, spec.budget(device), spec.offload)
        apply_plan(components, plan, device)
    if spec.compile and components.transformer is not None:
        components.transformer.compile_repeated_blocks(dynamic=True)
    return plan


def apply_plan(components, plan: Plan, device: torch.device) -> None:
    """Place every model of `components` as `plan` says (see the module doc). On a CPU the
    hooks run with the CPU as both devices: the mechanics, not the memory."""
    chain = _OneAtATime()
    cuda = device.type == "cuda"
    for name, place in plan.parts.items():
        module = getattr(components, name)
        if name == "vae" and place.tiled:
            module.enable_tiling()
        if place.level == "resident":
            module.to(device)
            continue
        module.to("cpu")
        if place.level == "model":
            chain.add(name, module, device)
            continue
        from diffusers.hooks import apply_group_offloading

        level = "block_level" if place.level == "group" else "leaf_level"
        k = place.blocks_per_group or None
        apply_group_offloading(
            module, onload_device=device, offload_device=torch.device("cpu"),
            offload_type=level, num_blocks_per_group=k if level == "block_level" else None,
            use_stream=cuda, non_blocking=cuda,
        )  # fmt: skip
        module._fpk_offloaded = True  # fpk.model.call: no per-section prepare outside forward
