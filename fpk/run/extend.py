"""`fpk extend`: continue a clip forward (or backward with --reverse).

Timeline (latent frames): [anchor 0][clip tail 1..K][new sections] forward, generated in the
forward order with the clip tail as packed history; [anchor 0][new sections][clip head]
with --reverse, generated in the inverted order toward the anchor with the clip head as the
known future. The anchor is the clip's first frame (or --anchor-image). With --keep-source
the output is the clip as decoded (never through the VAE unless --reencode-source) joined to
the new part, the SEAM frames at the join cross-faded into the VAE's version of them.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch

from fpk import events as ev
from fpk.config import Resolution
from fpk.errors import UsageError
from fpk.media import decoding, images
from fpk.media.clips import ClipInfo, probe, read_frames
from fpk.media.decoding import crossfade
from fpk.media.video import VideoWriter
from fpk.model import conditioning as cond
from fpk.run.jobs import JobSpec
from fpk.run.output import video_tags, write_sidecar
from fpk.run.pipeline import Conditions, sample_job
from fpk.run.runtime import Runtime
from fpk.sampling.orders import offset, plan_sections
from fpk.sampling.timeline import section_grid

SEAM = 8  # pixel frames cross-faded where the clip meets the new part


def context_pixel_frames(requested: int | None, available: int, capacity: int, t: int) -> int:
    """Source pixel frames entering the history: 1 + t*k, at most what the clip has.

    Default: enough to fill the packing levels twice over (older ones pool or drop anyway).
    """
    want = requested if requested is not None else 1 + t * 2 * capacity
    usable = min(max(1, want), available)
    return 1 + (usable - 1) // t * t


def run_extend(rt: Runtime, job: JobSpec, progress: ev.Progress = ev.SILENT) -> Path:
    """Continue `job.video` (forward, or backward with reverse); returns the mp4 path."""
    t0 = time.perf_counter()
    opts = job.extend
    if job.video is None:
        raise UsageError("fpk extend needs a clip to continue (the job has no 'video')")
    clip = probe(job.video)
    size = job.resolution or images.nearest_bucket(
        clip.width, clip.height, rt.preset.sampling.resolution, rt.preset.resolution_multiple
    )
    t = rt.temporal
    available = max(1, round(clip.duration * job.fps))
    n = context_pixel_frames(opts.context_frames, available, rt.schedule.capacity, t)
    reverse = bool(opts.reverse)
    start = 0.0 if reverse else max(0.0, (available - n) / job.fps)
    known_pixels = [images.fit_image_array(f, size) for f in read_frames(clip, job.fps, start, n)]
    if not known_pixels:
        raise_no_frames(clip)
    n = 1 + (len(known_pixels) - 1) // t * t
    known_pixels = known_pixels[:n] if reverse else known_pixels[-n:]
    known = cond.encode_latents(rt.components.vae, cond.to_tensor(np.stack(known_pixels)))
    conds = _anchor(rt, job, clip, size, opts)
    sgrid = section_grid(job.frames, job.window, t)
    k = known.shape[1]
    if reverse:
        plan = plan_sections("inverted", sgrid.sections, job.window, job.padding)
        first = 1 + sgrid.sections * job.window
        source = {first + i: known[:, i] for i in range(k)}
    else:
        plan = offset(plan_sections("forward", sgrid.sections, job.window, job.padding), k)
        source = {1 + i: known[:, i] for i in range(k)}
    s = sample_job(rt, job, progress, source, plan, conds, size)
    keep = opts.keep_source is not False  # kept unless --no-keep-source
    reencode = bool(opts.reencode_source)
    writer = VideoWriter(
        job.output,
        job.fps,
        size.width,
        size.height,
        job.crf,
        video_tags(job, f"fpk extend {job.video.name}"),
    )
    with writer:
        if reverse:
            _write_reverse(rt, job, s.latents, first, k, clip, size, keep, reencode, writer)
        else:
            _write_forward(rt, job, s.latents, k, clip, size, keep, reencode, writer, known_pixels)
    source_frames = writer.frames - job.frames
    write_sidecar(rt, job, size, sgrid, s.timings, time.perf_counter() - t0,
                   {"source_frames": source_frames, "new_frames": job.frames,
                    "frames": writer.frames, "context_frames": n})  # fmt: skip
    s.store.remove()
    seconds = round(time.perf_counter() - t0, 3)
    progress.sink(ev.JobDone(job.name, str(job.output), writer.frames, seconds, str(size),
                             str(job.sidecar)))  # fmt: skip
    return job.output


def raise_no_frames(clip: ClipInfo) -> None:
    raise UsageError(f"clip {clip.path}: holds no decodable frame")


def _anchor(rt: Runtime, job: JobSpec, clip: ClipInfo, size: Resolution, opts) -> Conditions:
    image = opts.anchor_image
    if image is not None:
        pixels = images.fit_image(images.open_image(image, "--anchor-image"), size)
    else:
        pixels = images.fit_image_array(read_frames(clip, job.fps, 0.0, 1)[0], size)
    comps = rt.components
    anchor = cond.encode_latents(comps.vae, cond.to_tensor(pixels)[:, None])[:, 0]
    return Conditions(anchor, cond.image_embeds(comps, pixels, rt.device, rt.dtype), None, pixels)


def _decode(rt: Runtime, latents: dict[int, torch.Tensor], first: int, stop: int) -> np.ndarray:
    z = torch.stack([latents[p] for p in range(first, stop)], dim=1)
    return decoding.to_uint8(decoding.decode_latents(rt.components.vae, z))


def _blend(source: np.ndarray, decoded: np.ndarray, into_decoded: bool) -> np.ndarray:
    """Cross-fade SEAM frames: from source to decoded (forward) or decoded to source."""
    a, b = (source, decoded) if into_decoded else (decoded, source)
    x = crossfade(
        torch.from_numpy(a).float().movedim(-1, 0),
        torch.from_numpy(b).float().movedim(-1, 0),
        len(a),
    )
    return x.movedim(0, -1).round().clamp(0, 255).to(torch.uint8).numpy()


def _source_frames(clip: ClipInfo, fps: int, size: Resolution):
    """Every frame of the clip at `fps`, fitted, decoded as the stream goes. Where no resize
    or rotation is needed, the decoded yuv420p frames themselves (av.VideoFrame): copied
    without a colour conversion."""
    from fpk.media.clips import iter_frames

    count = max(1, round(clip.duration * fps))
    raw = clip.rotation == 0 and (clip.width, clip.height) == (size.width, size.height)
    for frame in iter_frames(clip, fps, 0.0, count, raw=raw):
        if raw and frame.format.name == "yuv420p":
            yield frame
        elif raw:
            yield frame.to_ndarray(format="rgb24")
        else:
            yield images.fit_image_array(frame, size)


def _rgb(frame) -> np.ndarray:
    return frame if isinstance(frame, np.ndarray) else frame.to_ndarray(format="rgb24")


def _write_forward(rt, job, latents, k, clip, size, keep, reencode, writer, tail) -> None:
    """[clip (SEAM frames faded into the VAE's)][new frames]."""
    t = rt.temporal
    lat_first = max(1, k - 2)  # decode from a little before the seam for VAE context
    decoded = _decode(rt, latents, lat_first, max(latents) + 1)
    seam_at = t * (k - lat_first)  # index in `decoded` of the clip's last pixel frame
    new = decoded[seam_at + 1 : seam_at + 1 + job.frames]
    if keep:
        # the clip's last `seam` frames are the faded ones: every other frame as it is (a
        # clip shorter than SEAM frames fades fewer; none of its frames is dropped)
        seam = min(SEAM, seam_at + 1, len(tail))
        if reencode:
            source = _decode(rt, latents, 1, k + 1)  # the tail, through the VAE
            _write_all(writer, _source_frames_reencoded(clip, job, size, source, tail, seam))
        else:
            _write_all(writer, _lagged(_source_frames(clip, job.fps, size), seam))
        writer.write(_blend(np.stack(tail[-seam:]), decoded[seam_at + 1 - seam : seam_at + 1],
                            into_decoded=True))  # fmt: skip
    writer.write(new)


def _source_frames_reencoded(clip, job, size, decoded_tail, tail, seam: int):
    """The clip with its tail replaced by the VAE's decode (all but the last `seam` frames)."""
    yield from _lagged(_source_frames(clip, job.fps, size), len(tail))
    yield from decoded_tail[: len(tail) - seam]


def _lagged(frames, lag: int):
    """All frames but the last `lag`."""
    buffer: deque = deque()
    for f in frames:
        buffer.append(f)
        if len(buffer) > lag:
            yield buffer.popleft()


def _write_all(writer: VideoWriter, frames) -> None:
    for f in frames:
        if isinstance(f, np.ndarray):
            writer.write(f)
        else:
            writer.write_frame(f)


def _write_reverse(rt, job, latents, first, k, clip, size, keep, reencode, writer) -> None:
    """[new frames][clip, its first SEAM frames faded in from the VAE's version of them]."""
    t = rt.temporal
    decoded = _decode(rt, latents, 0, first + min(k, 3))
    new_count = t * (first - 1) + 1  # pixel frames up to the clip's first latent
    writer.write(decoded[new_count - job.frames : new_count])
    if not keep:
        return
    head = decoded[new_count:]  # the clip's head as the VAE renders it after the new part
    source = _source_frames(clip, job.fps, size)
    if reencode:
        source = itertools.chain(list(head), itertools.islice(source, len(head), None))
    first_frames = list(itertools.islice(source, SEAM))
    seam = min(len(first_frames), len(head))
    if seam:
        rgb = np.stack([_rgb(f) for f in first_frames[:seam]])
        writer.write(_blend(rgb, head[:seam], into_decoded=False))
    _write_all(writer, itertools.chain(first_frames[seam:], source))
