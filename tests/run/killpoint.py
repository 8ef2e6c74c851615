"""Run the fpk CLI with one fault at one chosen point: `python killpoint.py KIND:N fpk-args...`

KIND says where, N at which occurrence (counted over the whole run):
- `model`: before the N-th transformer call (mid-section, mid-job);
- `section`: after the N-th section's latents are written but before they are renamed;
- `frames`: after the N-th batch of frames goes into an mp4 (the partial file is open);
- `mp4`, `json`: before the N-th mp4 / sidecar is renamed into place (it is complete);
- `mp4+`, `json+`: just after it is renamed (what follows it has not happened);
- `sidecar`: half-way through writing the N-th sidecar;
- `readonly`: not a kill: the output folder turns read-only as the N-th mp4 is opened.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def counter(n: int):
    seen = [0]

    def hit() -> bool:
        seen[0] += 1
        return seen[0] == n

    return hit


def arm_model(hit) -> None:
    from fpk.run import pipeline

    original = pipeline.predict_flow

    def predict(*args, **kwargs):
        if hit():
            die()
        return original(*args, **kwargs)

    pipeline.predict_flow = predict


def arm_section(hit) -> None:
    import safetensors.torch

    original = safetensors.torch.save_file

    def save(*args, **kwargs):
        original(*args, **kwargs)
        if hit():
            die()

    safetensors.torch.save_file = save


def arm_frames(hit) -> None:
    from fpk.media.video import VideoWriter

    original = VideoWriter.write

    def write(self, frames):
        original(self, frames)
        if hit():
            die()

    VideoWriter.write = write


def arm_rename(hit, suffix: str, after: bool) -> None:
    original = os.replace

    def replace(src, dst, *args, **kwargs):
        mine = str(dst).endswith(suffix) and hit()
        if mine and not after:
            die()
        original(src, dst, *args, **kwargs)
        if mine:
            die()

    os.replace = replace


def arm_sidecar(hit) -> None:
    original = Path.write_text

    def write_text(self, data, *args, **kwargs):
        if self.name.endswith(".json") and ".partial" in self.name and hit():
            original(self, data[: len(data) // 2], *args, **kwargs)
            die()
        return original(self, data, *args, **kwargs)

    Path.write_text = write_text


def set_read_only(folder: Path, read_only: bool) -> None:
    """Permissions for ordinary users; root writes through them, so for root the immutable
    attribute (ext4 and most Linux file systems)."""
    if os.geteuid() != 0:
        os.chmod(folder, 0o555 if read_only else 0o755)
    else:
        subprocess.run(["chattr", "+i" if read_only else "-i", str(folder)], check=True)


def arm_readonly(hit) -> None:
    from fpk.media.video import VideoWriter

    original = VideoWriter.__init__

    def init(self, path, *args, **kwargs):
        if hit():
            set_read_only(path.parent, True)
        original(self, path, *args, **kwargs)

    VideoWriter.__init__ = init


def arm(spec: str) -> None:
    kind, n = spec.split(":")
    hit = counter(int(n))
    if kind in ("mp4", "json", "mp4+", "json+"):
        arm_rename(hit, "." + kind.rstrip("+"), kind.endswith("+"))
    else:
        {"model": arm_model, "section": arm_section, "frames": arm_frames,
         "sidecar": arm_sidecar, "readonly": arm_readonly}[kind](hit)  # fmt: skip


if __name__ == "__main__":
    arm(sys.argv[1])
    from fpk.cli import main

    main(sys.argv[2:])
