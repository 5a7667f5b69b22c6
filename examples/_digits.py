"""Shared pieces of the digits examples (07 MLP, 08 CNN, 09 LSTM): data, batch order, accuracy, plot.

Not an example itself (the tour runs only files starting with two digits). Everything here serves
both columns of an example equally: the split and the mini-batch order come from ``fnml.data`` and are
fed to torch too, so that PyTorch and fnml train on identical batches (torch's global generator and
JAX's keys never draw the same permutation).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import jax
import numpy as np
from sklearn.datasets import load_digits

from fnml import data

# 70 / 15 / 15 split of the 1797 digits: 1258 / 270 / 269 samples (torch's rounding rules).
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)
SPLIT_SEED = 0


@dataclass(frozen=True)
class Digits:
    """The raw digits and the split indices every example uses."""

    images: np.ndarray  # (1797, 64) float64 pixel values 0..16, rows of the 8x8 image in order
    labels: np.ndarray  # (1797,) int64 class 0..9
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray


def load() -> Digits:
    """scikit-learn's bundled digits (no network) and fnml's fixed-key 70/15/15 split."""
    bunch = load_digits()
    train_idx, val_idx, test_idx = data.random_split(jax.random.key(SPLIT_SEED), len(bunch.data), SPLIT_FRACTIONS)
    return Digits(
        images=np.asarray(bunch.data, dtype=np.float64),
        labels=np.asarray(bunch.target, dtype=np.int64),
        train_idx=np.asarray(train_idx),
        val_idx=np.asarray(val_idx),
        test_idx=np.asarray(test_idx),
    )


class SharedBatchOrder:
    """A torch ``batch_sampler`` yielding fnml's mini-batches: epoch ``e`` is ``data.batch_indices(epoch=e)``.

    ``DataLoader(TensorDataset(X, y), batch_sampler=SharedBatchOrder(n, 32, key))`` then yields, epoch
    after epoch, exactly the batches ``fnml.train.fit(..., batch_size=32, shuffle=True, key=key)`` uses.
    """

    def __init__(self, n: int, batch_size: int, key: jax.Array) -> None:
        self.n, self.batch_size, self.key, self.epoch = n, batch_size, key, 0

    def __len__(self) -> int:
        return data.num_batches(self.n, self.batch_size)

    def __iter__(self):
        batches = data.batch_indices(self.n, self.batch_size, shuffle=True, key=self.key, epoch=self.epoch)
        self.epoch += 1
        return iter([b.tolist() for b in batches])


def trajectory_diff(torch_losses, fnml_losses) -> tuple[float, int]:
    """max |torch - fnml| over the common prefix of two per-step loss lists, and that prefix length."""
    steps = min(len(torch_losses), len(fnml_losses))
    if steps == 0:
        return float("inf"), 0
    a = np.asarray(torch_losses[:steps], dtype=np.float64)
    b = np.asarray(fnml_losses[:steps], dtype=np.float64)
    return float(np.max(np.abs(a - b))), steps


def plot_losses(path: str, title: str, curves: dict[str, np.ndarray]) -> str:
    """One PNG with several per-step loss curves overlaid (log scale); returns the path."""
    # Figure + Agg canvas directly: no pyplot global state, works without a display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    styles = ["-", "--", ":", "-."]
    for index, (label, values) in enumerate(curves.items()):
        values = np.asarray(values, dtype=np.float64)
        axes.plot(np.arange(1, len(values) + 1), values, styles[index % len(styles)], label=label, linewidth=1.2)
    axes.set_yscale("log")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("cross-entropy loss")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def run_fresh_process(script: str, *args: str) -> str:
    """Run ``python script args...`` in a new interpreter (nothing shared with this one); return stdout."""
    env = dict(os.environ)
    env.pop("JAX_ENABLE_X64", None)  # the served model runs with jax's defaults, like the example
    completed = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, env=env, timeout=300)
    if completed.returncode != 0:
        raise RuntimeError(f"fresh process {script} failed (rc={completed.returncode}):\n{completed.stderr[-3000:]}")
    return completed.stdout.strip()


def print_accuracy(torch_accuracy: float, fnml_accuracy: float) -> None:
    """The machine-readable line tests/test_digits_accuracy.py parses."""
    print(f"ACCURACY torch={torch_accuracy:.4f} fnml={fnml_accuracy:.4f}", flush=True)
