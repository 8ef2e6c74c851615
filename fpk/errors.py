"""Typed errors. The CLI maps each to one readable line and an exit code; nothing else does."""

from __future__ import annotations

EXIT_FAILED = 1  # the job could not be done (missing weights, bad checkpoint, failed job)
EXIT_USAGE = 2  # the request itself is wrong (bad option, bad preset, bad schedule)


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
    """Weights are missing, unsafe (pickle), truncated or of another architecture."""
