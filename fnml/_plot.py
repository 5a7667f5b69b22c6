"""Loss curves as PNG files (matplotlib's object API: no pyplot global state, no display needed).

PyTorch equivalent: none (the ``plt.plot(losses)`` a training script ends with).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def plot_losses(path: str, losses: np.ndarray, history: Mapping[str, np.ndarray], *, title: str) -> str:
    """Save the per-step train loss (and the per-epoch ``history["val_loss"]`` if any) to ``path``; returns it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    axes.plot(np.arange(1, len(losses) + 1), losses, label="train loss (per step)")
    if "val_loss" in history and len(history["epoch"]):
        steps_per_epoch = len(losses) / max(len(history["epoch"]), 1)
        axes.plot(history["epoch"] * steps_per_epoch, history["val_loss"], "o-", label="validation loss (per epoch)")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path
