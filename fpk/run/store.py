"""Finished sections of unfinished jobs, on disk beside the outputs, so a rerun resumes.

One folder a job (`OUT/.fpk-work/NAME/`), one safetensors file a section, stamped with the
job's settings hash: a job whose settings changed starts afresh.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from fpk.errors import writing

WORK_DIR = ".fpk-work"  # beside the outputs: finished sections of unfinished jobs


class SectionStore:
    """Finished sections of one job on disk (safetensors), so a rerun resumes from them."""

    def __init__(self, folder: Path, settings_hash: str) -> None:
        self.folder = folder
        stamp = folder / "settings.hash"
        with writing(folder):
            if folder.is_dir() and (not stamp.is_file() or stamp.read_text() != settings_hash):
                shutil.rmtree(folder)
            folder.mkdir(parents=True, exist_ok=True)
            stamp.write_text(settings_hash)

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.safetensors"

    def load(self, name: str) -> torch.Tensor | None:
        from safetensors.torch import load_file

        path = self.path(name)
        return load_file(str(path))["latents"] if path.is_file() else None

    def save(self, name: str, latents: torch.Tensor) -> None:
        from safetensors.torch import save_file

        from fpk.media.video import publishing

        with publishing(self.path(name)) as tmp:
            save_file({"latents": latents.contiguous().cpu()}, str(tmp))

    def remove(self) -> None:
        remove_folder(self.folder)


def remove_folder(folder: Path) -> None:
    """A job's store, and the work folder once no job needs it."""
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()
    except OSError:
        pass


def store_folder(job) -> Path:
    """Where the finished sections of `job` (a JobSpec) are kept."""
    return job.out / WORK_DIR / job.name


def job_store(job) -> SectionStore:
    """The store of `job` (a JobSpec) in its output folder."""
    return SectionStore(store_folder(job), job.settings_hash)
