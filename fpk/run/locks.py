"""One process a job: a lock file per job, so fpk runs sharing an output folder split its jobs.

The lock is `OUT/.fpk-work/NAME.lock`, held with `flock` and holding the holder's pid (for
people looking). The kernel drops the lock of a process that dies, however it dies, so the
lock of a killed run is taken over at once, never left stale. A process finds the jobs others
hold, does the free ones first, then waits for each held one in turn (which usually means
finding it done).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from fpk.errors import writing
from fpk.media.video import remove_partials
from fpk.run.jobs import JobSpec
from fpk.run.store import WORK_DIR, remove_folder, store_folder

T = TypeVar("T")
POLL_SECONDS = 0.5  # how often a process waiting for another's job tries its lock again


class JobLock:
    """An exclusive, non-blocking lock on `path` that dies with its process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock if no other process holds it; True if taken."""
        import fcntl

        with writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        if not _same_file(fd, self.path):  # its holder removed it as we opened it: again
            os.close(fd)
            return self.acquire()
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        """Remove the lock file, then let go (a waiter that opened it tries again)."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
        try:
            self.path.parent.rmdir()  # the work folder goes once no job needs it
        except OSError:
            pass

    def holder(self) -> int | None:
        """The pid written by the process holding (or last holding) the lock."""
        try:
            return int(self.path.read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def lock_path(job: JobSpec) -> Path:
    return job.out / WORK_DIR / f"{job.name}.lock"


def tidy_done(job: JobSpec) -> None:
    """Remove the sections a run left of a job it finished (it was killed between writing the
    sidecar and removing them), unless a process holds the job."""
    if not store_folder(job).is_dir():
        return
    lock = JobLock(lock_path(job))
    if lock.acquire():
        try:
            remove_folder(store_folder(job))
        finally:
            lock.release()


def claim_each(
    items: list[T],
    job_of: Callable[[T], JobSpec],
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[tuple[int, T]]:
    """(n, item) for each item, numbered from 1, with its job's lock held until the next:
    the free jobs first, then each job another process holds, once it lets go."""
    held = []
    n = 0
    for item in items:
        lock = JobLock(lock_path(job_of(item)))
        if not lock.acquire():
            held.append((item, lock))
            continue
        n += 1
        yield from _holding(lock, n, item, job_of(item))
    for item, lock in held:
        _wait(lock, should_stop)
        n += 1
        yield from _holding(lock, n, item, job_of(item))


def _holding(lock: JobLock, n: int, item: T, job: JobSpec) -> Iterator[tuple[int, T]]:
    try:
        for path in (job.output, job.sidecar):
            remove_partials(path)  # what a killed holder left half-written
        yield n, item
    finally:
        lock.release()


def _wait(lock: JobLock, should_stop: Callable[[], bool] | None) -> None:
    """Until `lock` is taken; Ctrl-C (`should_stop`) stops the wait as it stops sampling."""
    from fpk.sampling.solvers import Cancelled

    while not lock.acquire():
        if should_stop is not None and should_stop():
            raise Cancelled
        time.sleep(POLL_SECONDS)
