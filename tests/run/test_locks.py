"""One process a job: the lock itself, its hand-over from a killed holder, and two fpk
processes sharing one output folder."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from fpk.run.locks import JobLock, claim_each

from ..procs import FAST, assert_same_outputs, fpk_command, fpk_env, write_manifest

HOLD = """
import sys, time
from pathlib import Path
from fpk.run.locks import JobLock
assert JobLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(600)
"""


def hold_in_child(path: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE,
                             text=True)  # fmt: skip
    assert child.stdout.readline().strip() == "held"
    return child


def test_lock_is_exclusive_and_names_its_holder(tmp_path):
    path = tmp_path / "work" / "a.lock"
    child = hold_in_child(path)
    try:
        lock = JobLock(path)
        assert not lock.acquire()
        assert lock.holder() == child.pid
    finally:
        child.kill()
        child.wait()
    assert lock.acquire()  # a killed holder's lock is taken over at once
    assert lock.holder() is not None and lock.holder() != child.pid
    lock.release()
    assert not path.exists() and not path.parent.exists()


def test_free_jobs_first_then_the_held_ones(tmp_path, monkeypatch):
    from fpk.run import locks

    jobs = [_Job(tmp_path, name) for name in ("a", "b", "c")]
    child = hold_in_child(locks.lock_path(jobs[0]))
    order = []
    monkeypatch.setattr(locks, "POLL_SECONDS", 0.01)
    claims = claim_each(jobs, lambda job: job)
    for n, job in claims:
        order.append((n, job.name))
        if job.name == "c":  # the holder goes while this process works on its last free job
            child.send_signal(signal.SIGKILL)
            child.wait()
    assert order == [(1, "b"), (2, "c"), (3, "a")]


def test_a_half_written_output_of_a_dead_holder_is_removed(tmp_path):
    job = _Job(tmp_path, "a")
    stale = tmp_path / ".a.mp4.99999.partial.mp4"
    stale.write_bytes(b"half")
    for _ in claim_each([job], lambda j: j):
        assert not stale.exists()


class _Job:
    """The part of a JobSpec the locks read."""

    def __init__(self, out: Path, name: str) -> None:
        self.out, self.name = out, name
        self.output, self.sidecar = out / f"{name}.mp4", out / f"{name}.json"


def test_two_processes_share_a_batch(tiny_saved, tmp_path):
    """Both finish with exit 0, every job is sampled once in all, the outputs are right."""
    _, _, weights = tiny_saved
    names = ["one", "two", "three"]
    jobs = [{"name": n, "prompt": f"a red circle {n}", "len": "1s", **FAST} for n in names]
    manifest = write_manifest(tmp_path / "jobs.toml", jobs)

    def start(out: Path) -> subprocess.Popen:
        args = ["generate", "--manifest", str(manifest), "--weights", str(weights), "--out",
                str(out), "--json"]  # fmt: skip
        return subprocess.Popen(fpk_command(*args), env=fpk_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip

    shared = tmp_path / "shared"
    procs = [start(shared), start(shared)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in results]
    events = [json.loads(line) for out, _ in results for line in out.splitlines()]
    sampled = Counter(e["job"] for e in events if e["event"] == "SectionStarted")
    sections = {e["job"]: e["sections"] for e in events if e["event"] == "JobStarted"}
    assert sampled == Counter(sections) and set(sampled) == set(names)
    alone = start(tmp_path / "alone")
    alone.communicate(timeout=600)
    assert_same_outputs(shared, tmp_path / "alone", names)
    assert sorted(p.name for p in shared.iterdir()) == sorted(
        [f"{n}.mp4" for n in names] + [f"{n}.json" for n in names]
    )
