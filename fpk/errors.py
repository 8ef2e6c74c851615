"""Typed errors. The CLI maps each to one readable line and an exit code; nothing else does."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

EXIT_FAILED = 1  # the job could not be done (a failed job, a full disk)
EXIT_USAGE = 2  # the request itself is wrong (bad option, preset, schedule or weights)


class FpkError(Exception):
    """Base of every error fpk raises on purpose; `str(err)` is the line the user sees."""

    exit_code = EXIT_FAILED


class UsageError(FpkError):
    """The user asked for something that cannot be done as asked."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A preset, schedule or manifest file is malformed or names an unknown key."""


class PackingError(UsageError):
    """A packing schedule cannot apply to the requested latent size."""


class WeightsError(FpkError):
    """Weights are missing, unsafe (pickle), truncated or of another architecture: bad input,
    like any other (exit 2)."""

    exit_code = EXIT_USAGE


class OutputError(FpkError):
    """The output folder refused a write (a full disk, a file size limit, no permission)."""


# why a write failed, and what to do about it, by errno
_WRITE_FAILURES = {
    "ENOSPC": ("no space left on the device", "free some space or choose another --out"),
    "EDQUOT": ("the disk quota is used up", "free some space or choose another --out"),
    "EFBIG": ("the file outgrew the size limit", "raise it (ulimit -f) or choose another --out"),
    "EACCES": ("permission denied", "make the folder writable or choose another --out"),
    "EPERM": ("permission denied", "make the folder writable or choose another --out"),
    "EROFS": ("the file system is read-only", "choose another --out"),
}


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an OSError while writing `path` into one OutputError line: what and what to do."""
    try:
        yield
    except OSError as err:
        name = errno.errorcode.get(err.errno or 0, "")
        problem, fix = _WRITE_FAILURES.get(name, (err.strerror or str(err), "choose another --out"))
        raise OutputError(
            f"cannot write {path}: {problem}; {fix}. Finished sections are kept: run the same "
            "command again to resume"
        ) from None
