"""The interpretability / capability frontier (spec section 6).

For each checkpoint: pretraining validation loss against the geometric mean, over tasks, of
the edges of its pruned circuits at a fixed target loss, over the tasks every run reached.
Colour = total parameters, marker size = nonzero parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib
import matplotlib.ticker

from sparsecircuits.circuits.config import PruneConfig
from sparsecircuits.circuits.spread import geometric_mean
from sparsecircuits.circuits.store import PruneStore, stored_prune_metrics
from sparsecircuits.circuits.task_data import task_splits
from sparsecircuits.errors import UserError
from sparsecircuits.loading import load_run
from sparsecircuits.train.plots import save_figure
from sparsecircuits.train.summary import summarize_run

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def measure_frontier(
    runs: list[Path],
    tasks: list[str],
    target_loss: float,
    sweep: int,
    steps: int = PruneConfig.steps,
    store: PruneStore | None = None,
    fresh: bool = False,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """One point per run; prunes already in `store` are reused unless `fresh`."""
    store = store or PruneStore()
    points = []
    for path in runs:
        run = load_run(path)
        summary = summarize_run(run)
        edges: dict[str, int | None] = {}
        for task in tasks:
            splits = task_splits(run, task, None)
            config = PruneConfig(target_loss=target_loss, steps=steps, sweep=sweep)
            try:
                metrics = stored_prune_metrics(run, path, splits, config, store, fresh, log)
                edges[task] = metrics["edges"]
            except UserError as error:
                log(f"  {path}: {error}")
                edges[task] = None
        points.append(
            {
                "run": str(path),
                "val_loss": summary["val_loss"],
                "total_params": summary["total_params"],
                "nonzero_params": summary["nonzero_params"],
                "edges": edges,
                "tasks_failed": [t for t, e in edges.items() if e is None],
            }
        )
    # Means over different task sets would not compare: use the tasks every run reached.
    compared = [t for t in tasks if all(p["edges"][t] is not None for p in points)]
    for point in points:
        point["tasks_compared"] = compared
        point["edges_geomean"] = geometric_mean([point["edges"][t] for t in compared])
    return points


def plot_frontier(points: list[dict], out: Path) -> Path:
    drawn = [p for p in points if p["edges_geomean"] is not None and p["val_loss"] is not None]
    fig, axis = plt.subplots(figsize=(6.5, 4.5), dpi=110)
    if drawn:
        largest = max(p["nonzero_params"] for p in drawn)
        scatter = axis.scatter(
            [p["val_loss"] for p in drawn],
            [p["edges_geomean"] for p in drawn],
            c=[p["total_params"] for p in drawn],
            cmap="viridis",
            s=[40 + 400 * p["nonzero_params"] / largest for p in drawn],
            edgecolors="black",
            linewidths=0.5,
        )
        colorbar = fig.colorbar(scatter, ax=axis, label="total parameters (millions)")
        colorbar.formatter = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value / 1e6:.2f}")
        colorbar.update_ticks()
        for p in drawn:
            axis.annotate(
                Path(p["run"]).name,
                (p["val_loss"], p["edges_geomean"]),
                textcoords="offset points",
                xytext=(0, 12),
                ha="center",
                fontsize=8,
            )
        axis.margins(x=0.2, y=0.25)
    axis.set_yscale("log")
    axis.set_xlabel("pretraining validation loss (nats/token)")
    axis.set_ylabel("circuit edges (geometric mean over tasks)")
    axis.set_title("circuit size vs capability; marker size: nonzero parameters", fontsize=10)
    return save_figure(fig, out)
