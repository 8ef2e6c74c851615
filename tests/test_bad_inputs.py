"""A corpus of bad (and odd but reasonable) inputs, each with what it must get: a video, or one
line naming the problem with exit code 2 (1 for a batch with a failed job), no traceback and
nothing at the final path. The files are made here, in a temporary folder.

Most cases fail in validation, before any weights load; those that must make a video make the
shortest one (one frame, after a clip of a few).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from fpk.media.video import read_video

from .test_cli import run

VIDEO = "video"  # the expectation of a case that must work


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[Path], list[str]]  # builds the input in a folder; returns the arguments
    expect: str  # VIDEO, or a piece of the one error line
    code: int = 2
    frame: Callable[[np.ndarray], bool] | None = None  # for a VIDEO: its first frame is right
    video: Callable[[np.ndarray], bool] | None = None  # for a VIDEO: all its frames are right


def noise(h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def saved(image: Image.Image, name: str, **kwargs) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        image.save(folder / name, **kwargs)
        return ["--image", str(folder / name)]

    return make


def raw(name: str, data: bytes, flag: str = "--image") -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        (folder / name).write_bytes(data)
        return [flag, str(folder / name)]

    return make


def audio_only(folder: Path) -> list[str]:
    path = folder / "sound.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=44100, layout="mono")
        for i in range(3):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 44100, i * 1024
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return ["--video", str(path)]


def png_bytes(image: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def exif_rotated(folder: Path) -> list[str]:
    """A 96x48 photo whose EXIF says: turn it 90 degrees (a phone held upright)."""
    img = Image.fromarray(noise(48, 96))
    exif = img.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW
    img.save(folder / "photo.jpg", exif=exif)
    return ["--image", str(folder / "photo.jpg"), "--name", "rotated"]


def folder_image(folder: Path) -> list[str]:
    (folder / "pics").mkdir()
    return ["--image", str(folder / "pics")]


def symlink_loop(folder: Path) -> list[str]:
    os.symlink(folder / "b.png", folder / "a.png")
    os.symlink(folder / "a.png", folder / "b.png")
    return ["--image", str(folder / "a.png")]


def animated_gif(folder: Path) -> list[str]:
    frames = [Image.fromarray(noise(seed=i)) for i in range(3)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    return ["--image", str(folder / "anim.gif")]


def sixteen_bit(folder: Path) -> list[str]:
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(ramp).save(folder / "deep.png")
    return ["--image", str(folder / "deep.png")]


def clip(name: str, frames: int = 5, **opts) -> Callable[[Path], list[str]]:
    """A clip written with PyAV; opts: pix_fmt, rate, pts_step (timestamp spacing), pts (the
    timestamps themselves, in 1/30 s), rotate (the display matrix's angle, degrees
    counter-clockwise), image (frame i's pixels; default noise), x264 (encoder options)."""

    def make(folder: Path) -> list[str]:
        path = folder / name
        image = opts.get("image", lambda i: noise(seed=i))
        pts = opts.get("pts", [i * opts.get("pts_step", 1) for i in range(frames)])
        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=Fraction(opts.get("rate", 30)),
                                    options=opts.get("x264", {}))  # fmt: skip
            stream.height, stream.width = image(0).shape[:2]
            stream.pix_fmt = opts.get("pix_fmt", "yuv420p")
            stream.codec_context.time_base = Fraction(1, 30)
            if "rotate" in opts:
                stream.set_display_rotation(opts["rotate"])
            for i, t in enumerate(pts):
                frame = av.VideoFrame.from_ndarray(image(i), format="rgb24")
                frame.pts = t
                out.mux(stream.encode(frame.reformat(format=stream.pix_fmt)))
            out.mux(stream.encode())
        return ["--video", str(path)]

    return make


# A variable frame rate (in 1/30 s; frames shown for 1, 3, 1, 4, 1, 4, 1 ticks), no B-frames:
# the header's duration then ends where the last frame does (15 frames at 30 fps).
VFR_PTS = (0, 1, 4, 5, 9, 10, 14)
VFR_HELD = (0, 1, 1, 1, 2, 3, 3, 3, 3, 4, 5)  # the source frame at output frames 0..10


def vfr(folder: Path) -> list[str]:
    """The clip, 5 of its frames in the history (the last 5 fade into the new part)."""
    make = clip("vfr.mp4", pts=VFR_PTS, image=grey, x264={"bf": "0"})
    return [*make(folder), "--context-frames", "5"]


def grey(i: int) -> np.ndarray:
    return np.full((64, 64, 3), 40 * i, np.uint8)


def held(video: np.ndarray) -> bool:
    """15 source frames by time, not by index (the first 11 as they were), 1 new."""
    levels = video[: len(VFR_HELD)].mean(axis=(1, 2, 3))
    return video.shape == (16, 64, 64, 3) and np.abs(levels - 40 * np.array(VFR_HELD)).max() < 8


def halves(i: int) -> np.ndarray:
    """96x48 as stored: left half red, right half blue."""
    img = np.zeros((48, 96, 3), np.uint8)
    img[:, :48, 0] = img[:, 48:, 2] = 255
    return img


def upright(video: np.ndarray) -> bool:
    """As displayed (turned 90 degrees clockwise): portrait, red on top; 3 frames + 1 new."""
    top, bottom = video[0, :44].astype(float), video[0, 44:].astype(float)
    red_top = top[..., 0].mean() > 200 > top[..., 2].mean()
    return video.shape == (4, 88, 48, 3) and red_top and bottom[..., 2].mean() > 200


def ramp(i: int) -> np.ndarray:
    return np.broadcast_to(np.arange(0, 256, 4, dtype=np.uint8)[None, :, None], (64, 64, 3))


def ten_bit(video: np.ndarray) -> bool:
    """3 frames + 1 new; the first as written (the 10 bits read as such, not as noise)."""
    error = np.abs(video[0].astype(float) - ramp(0)).mean()
    return video.shape == (4, 64, 64, 3) and error < 8


def manifest(text: str | bytes, suffix: str = ".toml") -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        path = folder / f"jobs{suffix}"
        data = text.encode() if isinstance(text, str) else text
        path.write_bytes(data.replace(b"@IMG", str(folder / "ok.png").encode()))
        Image.fromarray(noise()).save(folder / "ok.png")
        return ["--manifest", str(path)]

    return make


def preset_file(text: str, sub: tuple[str, str] = ("", "")) -> Callable[[Path], list[str]]:
    """The tiny preset (as @TINY in `text`), with `sub` replaced, as the user's own file."""
    from fpk.config import PRESET_DIR

    def make(folder: Path) -> list[str]:
        base = (PRESET_DIR / "tiny.toml").read_text()
        if sub[0]:
            base = base.replace(*sub)
        (folder / "mine.toml").write_text(text.replace("@TINY", base))
        return ["--preset", str(folder / "mine.toml")]

    return make


def flags(*args: str) -> Callable[[Path], list[str]]:
    return lambda folder: list(args)


def preset_sub(old: str, new: str) -> Callable[[Path], list[str]]:
    return preset_file("@TINY", (old, new))


def schedule_preset(*levels: tuple[list[int], int], then: tuple[str, ...] = ()):
    """The tiny preset with its own [packing.schedule], one (kernel, frames) a level (its
    weights still run their trained layout, geometric); `then`: flags after it."""
    table = ", ".join(f"{{ kernel = {k}, frames = {f} }}" for k, f in levels)
    make = preset_sub(
        '[packing]\nschedule = "geometric"', f"[packing.schedule]\nlevels = [{table}]"
    )
    return lambda folder: [*make(folder), *then]


def ten_thousand_jobs(folder: Path) -> list[str]:
    """A seed sweep of 10,000 jobs over one image, job 5000's image missing; only the shard
    holding job 5000 runs, after all 10,000 are checked: no model loads, nothing is made."""
    Image.fromarray(noise()).save(folder / "ok.png")
    lines = (json.dumps({"name": f"shot{i:05}", "image": "gone.png" if i == 5000 else "ok.png",
                         "seed": i, "len": "1f"}) for i in range(1, 10_001))  # fmt: skip
    (folder / "jobs.jsonl").write_text("\n".join(lines) + "\n")
    return ["--manifest", str(folder / "jobs.jsonl"), "--shard", "5000/10000"]


def end_image_vanilla(folder: Path) -> list[str]:
    Image.fromarray(noise()).save(folder / "e.png")
    return ["--end-image", str(folder / "e.png"), "--sampler", "vanilla"]


WEIGHTS: list[Path] = []  # the tiny weights folder of this session (set by the test)


def weights_variant(spoil: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    """A copy of the tiny weights (links, the transformer's files copied) spoiled by `spoil`."""

    def make(folder: Path) -> list[str]:
        import shutil

        copy = folder / "weights"
        copy.mkdir()
        for part in WEIGHTS[0].iterdir():
            if part.name != "transformer":
                os.symlink(part, copy / part.name)
        shutil.copytree(WEIGHTS[0] / "transformer", copy / "transformer")
        spoil(copy / "transformer")
        return ["--weights", str(copy)]

    return make


def pickle_only(folder: Path) -> None:
    for f in folder.glob("*.safetensors*"):
        f.unlink()
    (folder / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04pickle")


def drop_shard(folder: Path) -> None:
    sorted(folder.glob("*.safetensors"))[3].unlink()


def shard_outside(folder: Path) -> None:
    index = next(folder.glob("*.index.json"))
    data = json.loads(index.read_text())
    key = next(iter(data["weight_map"]))
    data["weight_map"][key] = "../../outside.safetensors"
    index.write_text(json.dumps(data))


def wrong_shape(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    shard = sorted(folder.glob("*.safetensors"))[0]
    state = load_file(str(shard))
    save_file({k: v.flatten()[:1].clone() for k, v in state.items()}, str(shard))


# Kernels no latent frame can take, in a preset file: one line naming the schedule and the
# kernel, from `generate` (in CASES) and `inspect-context` (test_bad_kernel_inspect_context).
FIRST = ([1, 2, 2], 1)
KERNELS = [
    Case("zero kernel", schedule_preset(FIRST, ([1, 0, 4], 1)),
         "schedule 'custom', level 2, kernel (1, 0, 4): kernel sizes and frame counts must be"),
    Case("negative kernel", schedule_preset(FIRST, ([1, -4, 4], 1)),
         "schedule 'custom', level 2, kernel (1, -4, 4): kernel sizes"),
    Case("kernel larger than the grid", schedule_preset(FIRST, ([1, 32, 32], 1)),
         "schedule 'custom', level 2, kernel (1, 32, 32) is larger than the latent frame 16x16"),
    Case("kernel off the patch grid", schedule_preset(FIRST, ([1, 3, 3], 1)),
         "schedule 'custom', level 2, kernel (1, 3, 3): spatial kernel must be a multiple"),
    Case("temporal kernel past its frames", schedule_preset(FIRST, ([3, 4, 4], 2)),
         "schedule 'custom', level 2, kernel (3, 4, 4): 2 frames do not fill whole groups"),
    Case("trained layout too big for --resolution",  # latent 6x16: the preset's own fits
         schedule_preset(FIRST, ([1, 4, 4], 2), then=("--resolution", "64x24")),
         "schedule 'geometric', level 4, kernel (1, 8, 4) is larger than the latent frame 6x16"),
]  # fmt: skip

GOOD_JOB = '[[job]]\nname = "good"\nimage = "@IMG"\nlen = "1f"\n'
CASES = [
    # --- media ---
    Case("empty image", raw("e.png", b""), "the file is empty"),
    Case("truncated png", raw("t.png", png_bytes(Image.fromarray(noise()))[:200]), "cannot read"),
    Case("text as png", raw("t.png", b"hello, not an image"), "not an image"),
    Case("wav as image", raw("a.png", b"RIFF\x24\x00\x00\x00WAVEfmt "), "not an image"),
    Case("1x1", saved(Image.new("RGB", (1, 1)), "one.png"), "too small"),
    Case("20000x20000", saved(Image.new("1", (20000, 20000)), "huge.png"), "too large"),
    Case("missing image", flags("--image", "/nonexistent/cat.png"), "no such file"),
    Case("folder as image", folder_image, "is a folder"),
    Case("symlink loop", symlink_loop, "symlink loop"),
    Case("end image empty", raw("end.png", b"", "--end-image"), "--end-image"),
    Case("png named jpg", saved(Image.fromarray(noise()), "x.jpg", format="PNG"), VIDEO),
    Case("grayscale png", saved(Image.fromarray(noise()[..., 0]), "g.png"), VIDEO),
    Case("16-bit png", sixteen_bit, VIDEO, frame=lambda f: f.mean() < 200),  # not all white
    Case("cmyk jpeg", saved(Image.fromarray(noise()).convert("CMYK"), "c.jpg"), VIDEO),
    Case("rgba png", saved(Image.fromarray(noise()).convert("RGBA"), "a.png"), VIDEO),
    Case("palette png", saved(Image.fromarray(noise()).convert("P"), "p.png"), VIDEO),
    Case("animated gif", animated_gif, VIDEO),
    Case("exif rotated", exif_rotated, VIDEO, frame=lambda f: f.shape[0] > f.shape[1]),
    # --- clips (fpk extend) ---
    Case("empty clip", raw("e.mp4", b"", "--video"), "empty"),
    Case("text as clip", raw("t.mp4", b"not a video at all", "--video"), "not a video file"),
    Case("audio-only clip", audio_only, "no video stream"),
    Case("6 h clip", clip("long.mp4", frames=2, pts_step=30 * 7 * 3600), "6 h"),
    Case("folder as clip", lambda f: (f / "c.mp4").mkdir() or ["--video", str(f / "c.mp4")],
         "is a folder"),  # fmt: skip
    Case("missing clip", flags("--video", "/nonexistent/clip.mp4"), "no such file"),
    Case("variable frame rate", vfr, VIDEO, video=held),
    Case("rotated clip", clip("phone.mp4", 3, image=halves, rotate=-90), VIDEO, video=upright),
    Case("10-bit clip", clip("deep.mp4", 3, image=ramp, pix_fmt="yuv420p10le"), VIDEO,
         video=ten_bit),
    # --- manifests ---
    Case("empty manifest", manifest(""), "no jobs"),
    Case("comments only", manifest("# nothing yet\n"), "no jobs"),
    Case("empty jsonl", manifest("\n\n", ".jsonl"), "no jobs"),
    Case("non-utf8", manifest(b'[[job]]\nprompt = "caf\xe9"\n'), "not UTF-8"),
    Case("toml syntax", manifest('[[job]]\nprompt = "a\nlen = 5\n'), "line 2"),
    Case("jsonl syntax", manifest('{"len": "1f"}\n{"len": \n', ".jsonl"), ":2: not JSON"),
    Case("jsonl not object", manifest("[1, 2]\n", ".jsonl"), "JSON object"),
    Case("yaml manifest", manifest("job: []\n", ".yaml"), ".toml or .jsonl"),
    Case("job not table", manifest("job = 5\n"), "array of tables"),
    Case("top-level key", manifest('prompt = "x"\n'), "unknown key 'prompt'"),
    Case("duplicate names", manifest(GOOD_JOB + GOOD_JOB), "same file 'good.mp4'"),
    Case("unknown job key", manifest(GOOD_JOB + "colour = 3\n"), "unknown key 'colour'", 1),
    Case("name escapes", manifest('[[job]]\nname = "../../evil"\nimage = "@IMG"\n'),
         "cannot be a file name", 1),  # fmt: skip
    Case("bad job among good", manifest(GOOD_JOB + '[[job]]\nlen = "-3s"\n'), "job 2", 1),
    Case("wrong type", manifest('[[job]]\nimage = "@IMG"\nseed = "abc"\n'), "seed", 1),
    Case("missing manifest", flags("--manifest", "/nonexistent/jobs.toml"), "no such file"),
    Case("10,000 jobs, one bad", ten_thousand_jobs, "shot05000", 1),
    # --- presets and schedules ---
    Case("unknown preset", flags("--preset", "nosuch"), "unknown preset 'nosuch'"),
    Case("preset unknown key", preset_file("@TINY\n[extra]\nx = 1\n"), "unknown key"),
    Case("preset toml syntax", preset_file("@TINY\n[sampling\n"), "line"),
    Case("unknown schedule", preset_sub('schedule = "geometric"', 'schedule = "nosuch"'),
         "unknown schedule 'nosuch'"),
    Case("negative window", preset_sub("window = 5", "window = -5"), "window"),
    *KERNELS,
    Case("kernel not dividing the grid", flags("--resolution", "72x40"), VIDEO),  # 10x18 padded
    # --- flags ---
    Case("len 0", flags("--len", "0"), "shorter than one frame"),
    Case("len negative", flags("--len", "-5s"), "not a length"),
    Case("len absurd", flags("--len", "1000h"), "longer than"),
    Case("len words", flags("--len", "five seconds"), "not a length"),
    Case("resolution 7x7", flags("--resolution", "7x7"), "7x7"),
    Case("fps 0", flags("--fps", "0"), "fps"),
    Case("crf 99", flags("--crf", "99"), "crf"),
    Case("steps 0", flags("--steps", "0"), "steps"),
    Case("unknown sampler", flags("--sampler", "bogus"), "bogus"),
    Case("1 MB prompt", flags("--prompt", "a" * 1_000_000), "prompt"),
    Case("end image, vanilla", end_image_vanilla, "--sampler inverted"),
    # --- weights ---
    Case("pickle weights", weights_variant(pickle_only), "refusing pickle"),
    Case("missing shard", weights_variant(drop_shard), "is missing"),
    Case("shard outside", weights_variant(shard_outside), "outside"),
    Case("wrong shapes", weights_variant(wrong_shape), "shape"),
    Case("component as weights", lambda f: ["--weights", str(WEIGHTS[0] / "transformer")],
         "looks like one component's folder"),
    Case("empty weights folder", lambda f: (f / "w").mkdir() or ["--weights", str(f / "w")],
         "--weights"),
]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _weights(tiny_saved):
    WEIGHTS[:] = [tiny_saved[2]]


def cli_args(case: Case, folder: Path) -> list[str]:
    """The command line of a case: its arguments after fast defaults (the last one wins)."""
    args = case.make(folder)
    defaults = ["--weights", str(WEIGHTS[0]), "--out", str(folder / "out"), "--quiet", "--steps",
                "1", "--window", "1"]  # fmt: skip
    if "--manifest" not in args:
        defaults += ["--len", "1f"]
    if args[:1] == ["--video"]:
        return ["extend", args[1], *defaults, *args[2:]]
    return ["generate", *defaults, *args]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, capsys, tmp_path):
    code, out, err = run(capsys, *cli_args(case, tmp_path))
    made = sorted(p.name for p in (tmp_path / "out").glob("*.mp4"))
    assert "Traceback" not in out + err
    if case.expect == VIDEO:
        assert code == 0 and len(made) == 1, err
        video = read_video(tmp_path / "out" / made[0])[0]
        assert case.frame is None or case.frame(video[0])
        assert case.video is None or case.video(video), video.shape
        return
    assert code == case.code, (code, err)
    assert case.expect in out + err, out + err
    if case.code == 2:
        lines = err.strip().splitlines()
        assert lines[0].startswith("fpk: error:") and case.expect in lines[0], err
    assert made in ([], ["good.mp4"])  # nothing at the failed job's path; the good one made


@pytest.mark.parametrize("case", KERNELS, ids=[c.name for c in KERNELS])
def test_bad_kernel_inspect_context(case, capsys, tmp_path, monkeypatch):
    """The same one line from `inspect-context`; `generate` gives it before any model loads."""
    code, out, err = run(capsys, "inspect-context", *case.make(tmp_path))
    assert (code, err.splitlines()[0][:12]) == (2, "fpk: error: "), (code, err)
    assert case.expect in err and len(err.strip().splitlines()) == 1, err
    monkeypatch.setattr("fpk.run.batch.load_runtime", lambda *a, **k: pytest.fail("loaded"))
    code, out, err = run(capsys, *cli_args(case, tmp_path))
    assert code == 2 and case.expect in err, err


def test_ten_thousand_jobs_checked_quickly(tmp_path, monkeypatch):
    """Planning a 10,000-job manifest checks every job (its one image decoded once), names
    the one bad entry and leaves the other 9,999 to run, in seconds; nothing generated."""
    from fpk.config import load_preset
    from fpk.media import images
    from fpk.run.batch import triage
    from fpk.run.jobs import plan_jobs, read_manifest

    path = Path(ten_thousand_jobs(tmp_path)[1])
    opened: list[Path] = []
    real_open = images.open_image
    monkeypatch.setattr(images, "open_image", lambda p, w: opened.append(p) or real_open(p, w))
    t0 = time.perf_counter()
    planned = plan_jobs(load_preset("tiny"), read_manifest(path), {}, tmp_path / "out", path)
    failed, todo = triage(planned, lambda event: None, overwrite=False)
    seconds = time.perf_counter() - t0
    assert [(i, o.name, o.status) for i, o in failed.items()] == [(4999, "shot05000", "failed")]
    assert failed[4999].detail == f"{path} job 5000: --image {tmp_path / 'gone.png'}: no such file"
    assert len(todo) == 9_999 and {job.image for _, job in todo} == {tmp_path / "ok.png"}
    assert len({job.name for _, job in todo}) == 9_999 and not list(
        (tmp_path / "out").glob("*.mp4")
    )
    assert opened.count(tmp_path / "ok.png") == 1
    assert seconds < 30, seconds  # about 2 s on 2 busy cores (was 10 s: names compared
    # pairwise, the image decoded and the folder probed once a job)


def test_enough_cases():
    assert len(CASES) >= 50
