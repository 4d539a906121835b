"""Plots of a run's metrics."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sparsecircuits.files import atomic_path  # noqa: E402
from sparsecircuits.loading.metrics_file import read_metrics  # noqa: E402


def plot_loss_curve(metrics_path: Path, out_path: Path) -> Path:
    """Training and validation loss against tokens, with the kept fraction on a second axis;
    below, the accuracy of each task scored during training (`--eval-tasks`), if any."""
    records = read_metrics(metrics_path)
    scored = [r for r in records if r.get("tasks")]
    if scored:
        fig, (loss_axis, task_axis) = plt.subplots(
            2, 1, figsize=(7, 6.5), dpi=110, sharex=True, height_ratios=(3, 2)
        )
        plot_task_accuracy(task_axis, scored)
    else:
        fig, loss_axis = plt.subplots(figsize=(7, 4), dpi=110)
    tokens = [r["tokens"] / 1e6 for r in records]
    loss_axis.plot(tokens, [r["loss"] for r in records], lw=0.8, alpha=0.6, label="train loss")
    evals = [r for r in records if r.get("val_loss") is not None]
    loss_axis.plot(
        [r["tokens"] / 1e6 for r in evals],
        [r["val_loss"] for r in evals],
        "o-",
        color="C3",
        label="validation loss",
    )
    (task_axis if scored else loss_axis).set_xlabel("tokens trained (millions)")
    loss_axis.set_ylabel("cross-entropy (nats/token)")
    density_axis = loss_axis.twinx()
    density_axis.plot(
        tokens, [r["density"] for r in records], color="C2", lw=1, ls="--", label="kept fraction"
    )
    density_axis.set_yscale("log")
    density_axis.set_ylabel("kept fraction of weights")
    lines = loss_axis.get_legend_handles_labels()
    more = density_axis.get_legend_handles_labels()
    loss_axis.legend(lines[0] + more[0], lines[1] + more[1], loc="upper right")
    return save_figure(fig, out_path)


def plot_task_accuracy(axis: plt.Axes, scored: list[dict]) -> None:
    tokens = [r["tokens"] / 1e6 for r in scored]
    for name in scored[-1]["tasks"]:
        accuracy = [r["tasks"].get(name, {}).get("accuracy") for r in scored]
        axis.plot(tokens, accuracy, "o-", ms=3, label=name)
    axis.axhline(0.5, color="grey", lw=0.8, ls=":")
    axis.set_ylim(0, 1.02)
    axis.set_ylabel("task accuracy (test pairs)")
    axis.legend(loc="lower right", fontsize=8)


def save_figure(fig: plt.Figure, out_path: Path) -> Path:
    """Write a figure atomically (a reader never sees half a PNG) and free it."""
    fig.tight_layout()
    try:
        with atomic_path(out_path) as temporary:
            fig.savefig(temporary, format=out_path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return out_path
