"""`fpk generate` end to end on tiny random components of the real classes, loaded from disk
through the real loading path: frame counts, samplers, end image, timestamped prompts,
manifests, skip-if-done, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fpk.media.video import read_video

from ..test_cli import run

FAST = ["--steps", "2", "--window", "2"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    for name, size in (("a.png", (64, 64)), ("wide.jpg", (120, 60)), ("b.png", (64, 64))):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
            folder / name
        )
    return folder


def generate(capsys, weights: Path, out: Path, *args: str) -> tuple[int, str, str]:
    return run(capsys, "generate", "--weights", str(weights), "--out", str(out), "--quiet", *args)


def outputs(out: Path) -> list[Path]:
    return sorted(out.glob("*.mp4"))


@pytest.mark.parametrize("sampler", ["inverted", "anti-drifting", "vanilla", "forward"])
@pytest.mark.parametrize("with_image", [True, False], ids=["image", "text"])
def test_exact_frame_count_every_sampler(capsys, tiny_saved, images, tmp_path, sampler, with_image):
    _, _, weights = tiny_saved
    args = ["--image", str(images / "a.png")] if with_image else []
    code, _, err = generate(
        capsys, weights, tmp_path, *args, "--prompt", "a red circle", "--len", "1.5s",
        "--sampler", sampler, *FAST,
    )  # fmt: skip
    assert code == 0, err
    (video,) = outputs(tmp_path)
    frames, tags, fps = read_video(video)
    assert frames.shape == (45, 64, 64, 3) and fps == 30
    assert tags["fpk_prompt"] == "a red circle"
    side = json.loads(video.with_suffix(".json").read_text())
    assert side["frames"] == 45 and side["job"]["sampler"] == sampler
    assert side["job"]["resolution"] == side["resolution"] == "64x64"  # as run, not null
    assert len(side["section_seconds"]) == side["sections"] == 6  # 1 + 4*2*6 >= 45
    assert not (tmp_path / ".fpk-work").exists()


def test_bucket_end_image_and_timestamped_prompts(capsys, tiny_saved, images, tmp_path):
    _, _, weights = tiny_saved
    code, _, err = generate(
        capsys, weights, tmp_path, "--image", str(images / "wide.jpg"),
        "--end-image", str(images / "b.png"), "--end-strength", "0.7",
        "--prompt", "[0s: a red circle] [1s-2s: a blue square moves] [2s: the circle stops]",
        "--prompt-blend", "1", "--len", "3s", *FAST,
    )  # fmt: skip
    assert code == 0, err
    (video,) = outputs(tmp_path)
    frames, tags, _ = read_video(video)
    assert frames.shape[0] == 90
    assert frames.shape[1:3] == (48, 88)  # 2:1 image -> nearest bucket of 64x64 area (1.83)
    side = json.loads(video.with_suffix(".json").read_text())
    assert side["job"]["end_strength"] == 0.7 and side["resolution"] == "88x48"


def test_json_events(capsys, tiny_saved, images, tmp_path):
    _, _, weights = tiny_saved
    code, out, err = run(
        capsys, "generate", "--weights", str(weights), "--out", str(tmp_path), "--json",
        "--image", str(images / "a.png"), "--len", "10f", *FAST,
    )  # fmt: skip
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    kinds = [e["event"] for e in events]
    assert all(e["schema"] == 1 for e in events)
    first_job = kinds.index("JobStarted")
    assert set(kinds[:first_job]) == {"Loading", "Loaded"} and kinds[first_job - 1] == "Loaded"
    assert "SectionStarted" in kinds and kinds[-1] == "Outcome"
    assert events[-1]["resolution"] == "64x64" and events[-1]["sidecar"].endswith(".json")
    section = next(e for e in events if e["event"] == "SectionStarted")
    assert section["context_tokens"] == sum(n for _, n in section["context"])
    assert kinds.count("StepDone") == 2 * 2  # 10 frames: 2 sections of 2 steps


def _manifest(tmp_path: Path, images: Path) -> Path:
    lines = [
        {"name": "one", "image": "a.png", "prompt": "a red circle", "len": "10f"},
        {"name": "two", "image": "missing.png", "len": "10f"},
        {"name": "three", "image": "b.png", "len": "0s"},
        {"name": "four", "len": "10f", "seed": 3},
        {"name": "five", "image": "wide.jpg", "len": "12f", "sampler": "vanilla"},
    ]
    folder = tmp_path / "jobs"
    folder.mkdir()
    for name in ("a.png", "b.png", "wide.jpg"):
        (folder / name).write_bytes((images / name).read_bytes())
    path = folder / "jobs.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines))
    return path


def test_manifest_failures_and_skips(capsys, tiny_saved, images, tmp_path):
    _, _, weights = tiny_saved
    manifest = _manifest(tmp_path, images)
    out = tmp_path / "out"
    code, printed, err = generate(capsys, weights, out, "--manifest", str(manifest), *FAST)
    assert code == 1
    assert [p.stem for p in outputs(out)] == ["five", "four", "one"]
    assert [Path(p).stem for p in printed.split()] == ["one", "four", "five"]  # manifest order
    assert err.count("missing.png: no such file") == 1  # each error once
    assert "missing.png: no such file" in err and "shorter than one frame" in err
    assert "Traceback" not in err
    stamps = {p: p.stat().st_mtime_ns for p in outputs(out)}
    code, printed, err = generate(capsys, weights, out, "--manifest", str(manifest), *FAST)
    assert code == 1 and len(printed.split()) == 3
    assert {p: p.stat().st_mtime_ns for p in outputs(out)} == stamps
    code, printed, err = generate(capsys, weights, out, "--manifest", str(manifest),
                                  "--steps", "1", "--window", "2")  # fmt: skip
    assert len(printed.split()) == 3
    assert all(p.stat().st_mtime_ns != stamps[p] for p in outputs(out))  # other settings: redone


def test_resume_after_interrupt_is_identical(tiny_saved, images, tmp_path):
    from fpk import events as ev
    from fpk.config import load_preset
    from fpk.run import batch
    from fpk.sampling.solvers import Cancelled

    _, _, weights = tiny_saved
    preset = load_preset("tiny")
    # lossless: the frames fpk hands the encoder are what must match (x264 at CRF > 0 was
    # seen to encode identical frames differently from one writer to the next)
    flags = {"image": images / "a.png", "len": "20f", "steps": 2, "window": 2, "name": "r",
             "crf": 0}  # fmt: skip
    whole = batch.generate(preset, [{}], flags, tmp_path / "whole", weights_dir=weights)
    assert whole[0].status == "done"
    seen = []

    def sink(e):
        seen.append(e)

    def stop_in_third_section():
        return sum(isinstance(e, ev.SectionDone) for e in seen) >= 2

    with pytest.raises(Cancelled):
        batch.generate(preset, [{}], flags, tmp_path / "cut", weights_dir=weights, sink=sink,
                       should_stop=stop_in_third_section)  # fmt: skip
    assert not (tmp_path / "cut" / "r.mp4").exists()
    seen.clear()
    again = batch.generate(preset, [{}], flags, tmp_path / "cut", weights_dir=weights, sink=sink)
    assert again[0].status == "done"
    assert next(e for e in seen if isinstance(e, ev.JobStarted)).resumed_sections == 2
    a, _, _ = read_video(tmp_path / "whole" / "r.mp4")
    b, _, _ = read_video(tmp_path / "cut" / "r.mp4")
    assert np.array_equal(a, b)


def _bad_images(folder: Path) -> dict[str, Path]:
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("not an image")
    Image.new("RGB", (1, 1)).save(folder / "dot.png")
    Image.new("1", (20000, 20000)).save(folder / "huge.png")
    return {n: folder / f"{n}.png" for n in ("empty", "text", "dot", "huge")}


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return _bad_images(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize(
    "args, needle, code",
    [
        (["--image", "{empty}"], "empty (0 bytes)", 2),
        (["--image", "{text}"], "not an image", 2),
        (["--image", "{dot}"], "too small", 2),
        (["--image", "{huge}"], "too large", 2),
        (["--image", "{missing}"], "no such file", 2),
        (["--len", "-3s"], "is not a length", 2),
        (["--len", "0"], "shorter than one frame", 2),
        (["--len", "100000h"], "longer than", 2),
        (["--sampler", "sideways"], "unknown sampler 'sideways'", 2),
        (["--prompt", "x" * 100_000], "100,000 characters", 2),
        (["--steps", "0"], "--steps must be between", 2),
        (["--resolution", "63x64"], "not divisible", 2),
    ],
)
def test_bad_input_one_line(capsys, tiny_saved, bad, tmp_path, args, needle, code):
    _, _, weights = tiny_saved
    paths = {k: str(v) for k, v in bad.items()} | {"missing": str(tmp_path / "nope.png")}
    args = [a.format(**paths) for a in args]
    got, out, err = generate(capsys, weights, tmp_path / "out", *args)
    assert got == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err
    assert not outputs(tmp_path / "out")


@pytest.mark.parametrize(
    "content, needle",
    [
        (b"\xff\xfe[[job]]\n", "not UTF-8"),
        (b'[[job]]\nlen = "1s"\ncolour = "red"\n', "unknown key 'colour'"),
        (b"[[job]\n", "malformed TOML"),
    ],
)
def test_bad_manifest(capsys, tiny_saved, tmp_path, content, needle):
    _, _, weights = tiny_saved
    path = tmp_path / "jobs.toml"
    path.write_bytes(content)
    code, _, err = generate(capsys, weights, tmp_path / "out", "--manifest", str(path))
    assert code in (1, 2) and needle in err and "Traceback" not in err, err
    assert not outputs(tmp_path / "out")


@pytest.mark.parametrize("where", ["/proc/fpk-out", "/proc/self/fpk-out"])
def test_output_folder_not_writable(capsys, tiny_saved, images, where):
    _, _, weights = tiny_saved
    code, _, err = generate(
        capsys, weights, Path(where), "--image", str(images / "a.png"), "--len", "5f"
    )
    assert code == 2 and "--out" in err and len(err.strip().splitlines()) == 1, err


def test_output_path_is_a_file(capsys, tiny_saved, images, tmp_path):
    _, _, weights = tiny_saved
    out = tmp_path / "file"
    out.write_text("")
    code, _, err = generate(capsys, weights, out, "--image", str(images / "a.png"), "--len", "5f")
    assert code == 2 and "--out" in err and len(err.strip().splitlines()) == 1


def test_an_image_unlike_the_tiny_world_gets_one_warning(capsys, tiny_saved, images, tmp_path):
    from fpk.synthetic import world

    _, _, weights = tiny_saved
    Image.fromarray(world.render_frame(world.scene(3), 0)).save(tmp_path / "world.png")
    for name, warned in (("a.png", True), ("world.png", False)):  # a.png: random noise
        folder = images if name == "a.png" else tmp_path
        code, out, err = run(
            capsys, "generate", "--weights", str(weights), "--out", str(tmp_path / f"out-{name}"),
            "--json", "--image", str(folder / name), "--len", "10f", *FAST,
        )  # fmt: skip
        assert code == 0, err
        texts = [e["text"] for e in map(json.loads, out.splitlines()) if e["event"] == "Message"]
        assert len([t for t in texts if t.startswith("warning: --image")]) == int(warned), texts
