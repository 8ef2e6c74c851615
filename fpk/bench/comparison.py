"""fpk and diffusers' FramePack pipeline side by side on the same components.

diffusers implements only the released layout, so both run tiny random components of the real
classes on a `tiny`-sized preset with the released schedule. Used by the parity test's
reasoning and by `fpk benchmark` (throughput); not by generation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fpk.config import load_preset


def released_preset(folder: Path):
    """The tiny preset with the released layout, written to `folder`."""
    text = Path(load_preset("tiny").source).read_text()
    text = text.replace('schedule = "geometric"', 'schedule = "released"')
    text = text.replace('trained_schedule = "geometric"', 'trained_schedule = "released"')
    path = folder / "released.toml"
    path.write_text(text)
    return load_preset(str(path))


def released_components(folder: Path):
    """(Runtime, start image path) of random tiny released-layout components saved to disk."""
    from PIL import Image

    from fpk.model.loading import load_components
    from fpk.model.tiny import build_components, save_components
    from fpk.run.runtime import Runtime
    from fpk.synthetic.world import vocabulary

    preset = released_preset(folder)
    comps = build_components(preset, vocabulary(), seed=0)
    with torch.no_grad():
        for p in comps["transformer"].parameters():
            p.normal_(0, 0.05)
    save_components(comps, folder / "weights")
    rng = np.random.default_rng(0)
    image = folder / "a.png"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(image)
    rt = Runtime(preset, load_components(preset, folder / "weights"), torch.device("cpu"),
                 torch.float32)  # fmt: skip
    return rt, image


def _frames(sections: int, window: int) -> int:
    return 1 + sections * window * 4


def fpk_runner(rt, image: Path, sections: int, steps: int, out: Path) -> Callable[[], None]:
    """`fpk generate` of `sections` sections (Euler, inverted): to an mp4, as users get it."""
    from fpk.run.jobs import resolve_job
    from fpk.run.pipeline import run_job

    window = rt.preset.sampling.window
    job = resolve_job(rt.preset, {"image": str(image), "len": f"{_frames(sections, window)}f"},
                      {"solver": "euler", "steps": steps, "name": "fpk"}, out)  # fmt: skip
    return lambda: run_job(rt, job)


def diffusers_pipeline(rt, stock: bool = True):
    """diffusers' FramePack pipeline over `rt`'s components (its transformer class holding our
    transformer's weights: same keys on the released layout), flow-matching Euler with the
    FramePack shift. With `stock`, on a copy of the VAE as diffusers ships it (fpk's oneDNN
    convolutions back to nn.Conv3d: fpk.model.onednn), else on fpk's own VAE object."""
    import copy

    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoFramepackPipeline,
        HunyuanVideoFramepackTransformer3DModel,
    )

    from fpk.model.onednn import use_onednn
    from fpk.model.transformer import transformer_config

    c = rt.components
    vae = use_onednn(copy.deepcopy(c.vae), enabled=False) if stock else c.vae
    cfg = transformer_config(rt.preset.architecture, rt.schedule)
    for key in ("history_kernels", "history_independent"):
        cfg.pop(key)
    ref = HunyuanVideoFramepackTransformer3DModel(
        **cfg, has_image_proj=True, has_clean_x_embedder=True, guidance_embeds=True
    )
    ref.load_state_dict(c.transformer.state_dict(), strict=True)
    pipe = HunyuanVideoFramepackPipeline(
        transformer=ref.eval(), vae=vae, text_encoder=c.text_encoder, tokenizer=c.tokenizer,
        text_encoder_2=c.text_encoder_2, tokenizer_2=c.tokenizer_2,
        image_encoder=c.image_encoder, feature_extractor=c.feature_extractor,
        scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True),
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


def diffusers_runner(
    rt, image: Path, sections: int, steps: int, out: Path, stock: bool = True
) -> Callable[[], float]:
    """HunyuanVideoFramepackPipeline on the same components (`diffusers_pipeline`), its frames
    written to an mp4 in `out` by the encoder fpk writes with, at a job's default fps and crf
    (diffusers' `export_to_video` needs imageio or OpenCV, neither of which fpk depends on):
    the same work as `fpk_runner`, start image to video file. Each call returns the seconds
    the writing took, so that the pipeline's own time can be told apart."""
    from PIL import Image

    from fpk.media.video import VideoWriter

    pipe = diffusers_pipeline(rt, stock)
    prompt = rt.prompt("")
    window = rt.preset.sampling.window
    img = Image.open(image).convert("RGB")
    sampling = rt.preset.sampling
    out.mkdir(parents=True, exist_ok=True)

    def go() -> float:
        frames = pipe(
            image=img, prompt_embeds=prompt.embeds, pooled_prompt_embeds=prompt.pooled,
            prompt_attention_mask=prompt.mask, height=img.height, width=img.width,
            num_frames=sections * ((window - 1) * 4 + 1), latent_window_size=window,
            num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
            sampling_type="inverted_anti_drifting", output_type="np",
        ).frames[0]  # fmt: skip
        t = time.perf_counter()
        with VideoWriter(out / "diffusers.mp4", sampling.fps, img.width, img.height,
                         sampling.crf) as writer:  # fmt: skip
            writer.write((frames * 255).round().clip(0, 255).astype(np.uint8))
        return time.perf_counter() - t

    return go
