"""The interpretability / capability frontier (spec section 6; the paper's figure).

One point per checkpoint: pretraining validation loss (x) against circuit size (y, log): the
median, over the tasks every run does, of each task's median edges over pruning seeds; the
bar spans the same median taken seed by seed (how much the pruning seed moves it). Colour =
total parameters, marker size = nonzero parameters. A task counts as done by a run when its
full model reaches the target loss on validation pairs; only tasks every run does are
compared, since medians over different task sets would not compare.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

import matplotlib
import matplotlib.ticker

from sparsecircuits.circuits.config import PruneConfig
from sparsecircuits.circuits.seeds import prune_seeds, validation_loss
from sparsecircuits.circuits.store import PruneStore
from sparsecircuits.loading import load_run
from sparsecircuits.tasks import TASKS
from sparsecircuits.train.plots import save_figure
from sparsecircuits.train.summary import summarize_run

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def measure_frontier(
    runs: list[Path],
    tasks: list[str] | None,
    config: PruneConfig,
    seeds: int = 3,
    store: PruneStore | None = None,
    recorded: dict[str, dict] | None = None,
    fresh: bool = False,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """One point per run over `tasks` (default: the whole suite) that every run does; prunes
    in `store` or `recorded` (by key) are reused unless `fresh`."""
    store = store or PruneStore()
    loaded = [load_run(path) for path in runs]
    candidates = tasks or list(TASKS)
    full = {task: [validation_loss(run, task) for run in loaded] for task in candidates}
    compared = [t for t in candidates if all(loss <= config.target_loss for loss in full[t])]
    done = ", ".join(compared) or "none"
    log(f"tasks every run does (full model at or below {config.target_loss}): {done}")
    points = []
    for index, (path, run) in enumerate(zip(runs, loaded, strict=True)):
        summary = summarize_run(run)
        results = {
            task: prune_seeds(run, path, task, config, seeds, store, recorded or {}, fresh, log)
            for task in compared
        }
        points.append(
            {
                "run": str(path),
                "val_loss": summary["val_loss"],
                "total_params": summary["total_params"],
                "nonzero_params": summary["nonzero_params"],
                "tasks_compared": compared,
                "full_validation_loss": {task: full[task][index] for task in candidates},
                "prunes": {task: result["prunes"] for task, result in results.items()},
                "edges": {task: result["edges"] for task, result in results.items()},
                **median_over_tasks(results, seeds),
            }
        )
    return points


def median_over_tasks(results: dict[str, dict], seeds: int) -> dict:
    """The median over tasks of each task's median edges, and that median seed by seed.
    None where a task reached the target with no seed."""
    if not results or any(result["edges"] is None for result in results.values()):
        failed = [task for task, result in results.items() if result["edges"] is None]
        return {"edges_median": None, "edges_by_seed": [], "tasks_failed": failed}
    by_seed = []
    for seed in range(seeds):
        sizes = [_seed_edges(result["prunes"], seed) for result in results.values()]
        if all(size is not None for size in sizes):
            by_seed.append(statistics.median(sizes))
    medians = [result["edges"]["median"] for result in results.values()]
    return {
        "edges_median": statistics.median(medians),
        "edges_by_seed": by_seed,
        "tasks_failed": [],
    }


def _seed_edges(prunes: list[dict], seed: int) -> float | None:
    found = [p["edges"] for p in prunes if p.get("seed") == seed and "error" not in p]
    return found[0] if found else None


def plot_frontier(points: list[dict], out: Path) -> Path:
    drawn = [p for p in points if p["edges_median"] is not None and p["val_loss"] is not None]
    fig, axis = plt.subplots(figsize=(6.5, 4.5), dpi=110)
    if drawn:
        largest = max(p["nonzero_params"] for p in drawn)
        for p in drawn:  # the spread over pruning seeds
            low, high = min(p["edges_by_seed"], default=None), max(p["edges_by_seed"], default=None)
            if low is not None:
                axis.plot([p["val_loss"]] * 2, [low, high], color="0.4", lw=1.5, zorder=1)
        scatter = axis.scatter(
            [p["val_loss"] for p in drawn],
            [p["edges_median"] for p in drawn],
            c=[p["total_params"] for p in drawn],
            cmap="viridis",
            s=[40 + 400 * p["nonzero_params"] / largest for p in drawn],
            edgecolors="black",
            linewidths=0.5,
            zorder=2,
        )
        colorbar = fig.colorbar(scatter, ax=axis, label="total parameters (millions)")
        colorbar.formatter = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value / 1e6:.2f}")
        colorbar.update_ticks()
        for p in drawn:
            axis.annotate(
                Path(p["run"]).name,
                (p["val_loss"], p["edges_median"]),
                textcoords="offset points",
                xytext=(0, 12),
                ha="center",
                fontsize=8,
            )
        axis.margins(x=0.2, y=0.25)
    axis.set_yscale("log")
    axis.set_xlabel("pretraining validation loss (nats/token)")
    axis.set_ylabel("circuit edges (median over tasks and seeds)")
    tasks = drawn[0]["tasks_compared"] if drawn else []
    axis.set_title(
        f"circuit size vs capability over {len(tasks)} tasks every model does\n"
        "marker size: nonzero parameters; bar: median seed by seed",
        fontsize=9,
    )
    return save_figure(fig, out)
