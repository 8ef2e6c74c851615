"""Training logs (gzip JSON lines: small in the repository, not counted as source) and the
loss curve drawn from them."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

LOG = "log.jsonl.gz"


def plot_loss(log_path: Path, png: Path, window: int = 50) -> None:
    """The loss curve of a run (every step, and a running mean), across resumed runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log_path)
    if not rows:
        return
    steps = np.array([r["step"] for r in rows])
    loss = np.array([r["loss"] for r in rows])
    smooth = (
        np.convolve(loss, np.ones(window) / window, mode="valid") if len(loss) > window else loss
    )
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, loss, alpha=0.3, label="loss per step")
    ax.plot(steps[len(steps) - len(smooth) :], smooth, label=f"mean of {window} steps")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("flow-matching MSE" if "transformer" in str(log_path) else "L1 + MSE")
    ax.set_yscale("log")
    ax.set_title(f"{log_path.parent.name} training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def flush_log(path: Path, log: list[dict]) -> None:
    """Append `log`'s entries to the gzip log at `path` as one more gzip member (a reader sees
    one stream), with no name and a fixed mtime in its header so the same entries give the
    same bytes; then clear it."""
    if not log:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(entry) + "\n" for entry in log)
    with path.open("ab") as raw, gzip.GzipFile("", "ab", fileobj=raw, mtime=0) as f:
        f.write(text.encode())
    log.clear()


def read_log(path: Path) -> list[dict]:
    """Every entry of a gzip JSONL log, across resumed runs."""
    if not path.is_file():
        return []
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]
