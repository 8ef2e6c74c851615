"""`fpk benchmark --part speed`: the real transformer's seconds per denoising step and per
output frame, for each attention backend, step cache, `--compile` (its compile time apart:
the first call's seconds minus a steady call's) and offload mode available, with peak GPU
memory and TFLOP/s by an explicit FLOP count.

`--random-weights` builds the preset's architecture with seeded random weights straight on
the device (no download: the 13B base at its real size), and feeds it random conditions of
the real shapes (prompt tokens, SigLIP tokens, a section with a full packed history). Seconds
per frame here are the transformer's alone (steps x seconds per step over a section's pixel
frames); the VAE and encoders are not timed.
"""

from __future__ import annotations

import time

import torch

from fpk import events as ev

PROMPT_TOKENS = 256  # HunyuanVideo's Llama prompt length (the template cropped)
IMAGE_TOKENS = 729  # SigLIP so400m at 384 px, patch 14
RANDOM_STD = 0.02


def random_transformer(preset, device, dtype, seed: int = 0):
    """The preset's FramePackTransformer, weights drawn N(0, 0.02), on `device` in `dtype`."""
    from fpk.config import get_schedule
    from fpk.model.transformer import FramePackTransformer, transformer_config

    layout = get_schedule(preset.weights.trained_schedule or preset.schedule.name)
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in `dtype`: 13B never passes through float32
    try:
        with torch.device(device):
            model = FramePackTransformer(**transformer_config(preset.architecture, layout))
    finally:
        torch.set_default_dtype(default)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, RANDOM_STD)
    return model.to(dtype).eval()


def history_section(schedule, grid, window: int, channels: int, history: int):
    """(step, context) of a section with `history` random latent frames behind it, packed by
    `schedule`: the section every cost measurement times."""
    from fpk.model.context import section_context
    from fpk.sampling.orders import HistorySide, SectionStep

    first = 1 + history
    step = SectionStep(0, 0, range(first, first + window), 0, (HistorySide(first - 1, -1),))
    known = {p: torch.randn(channels, grid.height, grid.width) for p in range(first)}
    return step, section_context(step, schedule, grid, known, 0, known[0])


def random_section(model, preset, resolution, device, dtype):
    """(x, inputs) of one section with a full packed history, random tensors of real shapes."""
    from fpk.model.call import section_inputs
    from fpk.model.conditioning import PromptEmbeds

    cfg = model.config
    grid = preset.latent_grid(resolution)
    window = preset.sampling.window
    c = cfg.in_channels
    step, ctx = history_section(preset.schedule, grid, window, c, preset.schedule.capacity + 1)
    prompt = PromptEmbeds(
        torch.randn(1, PROMPT_TOKENS, cfg.text_embed_dim),
        torch.ones(1, PROMPT_TOKENS, dtype=torch.bool),
        torch.randn(1, cfg.pooled_projection_dim),
    )
    images = torch.randn(1, IMAGE_TOKENS, cfg.image_proj_dim)
    inputs = section_inputs([prompt], images, torch.tensor([list(step.target)]), [ctx], 10.0)
    x = torch.randn(1, c, window, grid.height, grid.width, device=device)
    return x, inputs.to(device, dtype)


def block_flops(model, image_tokens: int, text_tokens: int) -> int:
    """Multiply-adds x 2 of the blocks for one forward: every Linear on the tokens it sees
    (dual blocks: image-stream layers on image tokens, `add_*`/`*context*` layers on text
    tokens; single blocks: all of them on both), plus attention's Q K^T and A V
    (2 x 2 x N^2 x width each block). Embedders and the token refiner are left out."""
    n = image_tokens + text_tokens
    width = model.config.num_attention_heads * model.config.attention_head_dim
    total = 0
    for kind, blocks in (("dual", model.transformer_blocks),
                         ("single", model.single_transformer_blocks)):  # fmt: skip
        for block in blocks:
            for name, layer in block.named_modules():
                if not isinstance(layer, torch.nn.Linear) or name.startswith("norm"):
                    continue  # AdaLN modulation runs on one vector, not per token
                text_side = "add_" in name or "context" in name
                tokens = n if kind == "single" else text_tokens if text_side else image_tokens
                total += 2 * tokens * layer.in_features * layer.out_features
            total += 2 * 2 * n * n * width
    return total


def _seconds(fn, repeats: int, device) -> float:
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t)
    return best


def run_speed(preset, device, dtype, resolution=None, steps: int = 25, repeats: int = 3,
              model=None, sink: ev.EventSink = ev.ignore) -> dict:  # fmt: skip
    """The speed report (see module doc); `model`: a loaded transformer instead of random."""
    from fpk.model.caching import ForwardCounter, SectionCache, parse_cache
    from fpk.model.call import predict_flow, target_tokens
    from fpk.model.loading import Components
    from fpk.model.offload import ATTENTION, GB, apply_plan, count_part, plan_memory
    from fpk.sampling.sigmas import flow_sigmas
    from fpk.sampling.solvers import sample

    model = model if model is not None else random_transformer(preset, device, dtype)
    x, inputs = random_section(model, preset, resolution, device, dtype)
    with torch.no_grad():
        prepared = model.prepare(inputs.positions, inputs.context, *x.shape[-2:])
    sequence = prepared.valid.shape[1]  # packed context + the section's targets
    text = PROMPT_TOKENS + IMAGE_TOKENS
    flops = block_flops(model, sequence, text)
    sigma = torch.tensor([0.5], dtype=torch.float64)
    frames = preset.sampling.window * preset.vae.temporal_compression
    res = resolution or preset.sampling.resolution

    def row(what: str, seconds: float, forwards: int | None = None) -> dict:
        peak = torch.cuda.max_memory_allocated(device) / GB if device.type == "cuda" else None
        out = {"config": what, "s_per_step": round(seconds, 4),
               "s_per_frame": round(seconds * steps / frames, 4),
               "tflops": round(flops / seconds / 1e12, 3),
               "peak_vram_gb": None if peak is None else round(peak, 2)}  # fmt: skip
        if forwards is not None:
            out["forwards"] = forwards
        sink(ev.Message("", f"speed {what}: {seconds:.4f} s/step"))
        return out

    def one_step(m) -> None:
        with torch.no_grad():
            predict_flow(m, x, sigma, inputs)

    rows = []
    one_step(model)  # warm-up: kernels, allocator
    backends = _attention_backends(device)
    for name in backends:
        if len(backends) > 1:
            model.set_attention_backend(ATTENTION[name])
        _reset_peak(device)
        timed = _seconds(lambda m=model: one_step(m), repeats, device)
        rows.append(row(f"attention {name}", timed))
    if len(backends) > 1:
        model.set_attention_backend(ATTENTION["sdpa"])
    sigmas = flow_sigmas(steps, target_tokens(model.config, x))
    for cache in ("none", "teacache", "fbcache"):
        counter = ForwardCounter(model)

        def section(cache=cache, m=model) -> None:
            sc = SectionCache(m, parse_cache(cache), steps, preset.name)

            def flow(z, s):
                with sc.branch("prompt"):
                    return predict_flow(m, z, s, inputs).float()

            with torch.no_grad():
                sample(flow, x.float(), sigmas, "unipc")

        _reset_peak(device)
        seconds = _seconds(section, 1, device) / steps
        rows.append(row(f"cache {cache}", seconds, counter.computed))
        counter.close()
    state = {k: v.to("cpu") for k, v in model.state_dict().items()}
    del model  # (a caller's loaded model stays where it is: its memory counts in the peaks)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    compiled = random_transformer(preset, device, dtype)
    compiled.load_state_dict(state)
    compiled.compile_repeated_blocks(dynamic=True)  # --compile
    _reset_peak(device)
    first = _seconds(lambda m=compiled: one_step(m), 1, device)
    steady = _seconds(lambda m=compiled: one_step(m), repeats, device)
    rows.append({**row("compile", steady), "compile_s": round(first - steady, 2)})
    del compiled
    for mode in ("model", "group", "sequential"):  # each on a fresh copy in CPU memory
        placed = random_transformer(preset, "cpu", dtype)
        placed.load_state_dict(state)
        plan = plan_memory([count_part("transformer", placed, 0)], None, mode)
        apply_plan(Components(transformer=placed), plan, device)
        one_step(placed)
        _reset_peak(device)
        rows.append(row(f"offload {mode}", _seconds(lambda m=placed: one_step(m), repeats, device)))
        del placed
    return {"preset": preset.name, "resolution": str(res), "device": str(device),
            "dtype": str(dtype).removeprefix("torch."), "steps": steps,
            "tokens": sequence + text, "flops_per_step": flops,
            "frames_per_section": frames, "rows": rows}  # fmt: skip


def _reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _attention_backends(device) -> list[str]:
    """sdpa, and on a GPU every other backend whose package is installed."""
    from fpk.errors import UsageError
    from fpk.model.offload import AUTO_ATTENTION, pick_attention

    names = ["sdpa"]
    if device.type == "cuda":
        for name in AUTO_ATTENTION:
            try:
                pick_attention(name, device)
            except UsageError:
                continue
            if name not in names:
                names.append(name)
    return names
