"""Circuit size: a weight-sparse model against a dense one, side by side in one run.

For every task both models do (full-model held-out task loss at or below the target), prune
each model to the target loss with the same settings and compare circuit edges. Prints one row
per task, the geometric mean of edges of each model, their ratio (the paper saw ~16x) and the
wall time of each prune. Prunes are stored in the prune store (SQLite) and reused by a later
run or by `sparsecircuits frontier` with the same settings; --fresh prunes again.

    .venv/bin/python benchmarks/circuit_size.py models/reference-sparse models/reference-dense
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from sparsecircuits.circuits import PruneConfig
from sparsecircuits.circuits.frontier import geometric_mean
from sparsecircuits.circuits.store import PruneStore, stored_prune_metrics
from sparsecircuits.circuits.sweep import DEFAULT_SETTINGS
from sparsecircuits.circuits.task_data import task_splits
from sparsecircuits.errors import UserError
from sparsecircuits.tasks import TASKS, evaluate_task
from sparsecircuits.train import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sparse", type=Path)
    parser.add_argument("dense", type=Path)
    parser.add_argument("--tasks", help="comma-separated task names (default: all 20)")
    parser.add_argument("--target-loss", type=float, default=0.15)
    parser.add_argument(
        "--sweep", type=int, default=DEFAULT_SETTINGS, help="settings per prune, as prune --sweep"
    )
    parser.add_argument("--steps", type=int, default=PruneConfig.steps)
    parser.add_argument("--fresh", action="store_true", help="prune again, ignore stored results")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    paths = {"sparse": args.sparse, "dense": args.dense}
    runs = {name: load_run(path) for name, path in paths.items()}
    store = PruneStore()
    tasks = args.tasks.split(",") if args.tasks else list(TASKS)
    config = PruneConfig(target_loss=args.target_loss, steps=args.steps)
    rows = []
    for task in tasks:
        splits = {name: task_splits(run, task, None) for name, run in runs.items()}
        full = {
            name: evaluate_task(runs[name].model, split.select)["loss"]
            for name, split in splits.items()
        }
        row = {"task": task, **{f"{name}_full_loss": loss for name, loss in full.items()}}
        if max(full.values()) > args.target_loss:
            print(f"{task}: skipped, not done by both (full losses {fmt(full)})", flush=True)
            rows.append(row)
            continue
        for name, run in runs.items():
            try:
                metrics = stored_prune_metrics(
                    run,
                    paths[name],
                    splits[name],
                    config,
                    args.sweep,
                    store,
                    args.fresh,
                    print,
                )
            except UserError as error:
                print(f"{task} ({name}): {error}", flush=True)
                continue
            row |= {f"{name}_{key}": metrics[key] for key in ("edges", "nodes", "seconds")}
            row[f"{name}_circuit_loss"] = metrics["circuit_loss"]
        rows.append(row)
        print(describe(row), flush=True)
    summarise(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def fmt(values: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.3f}" for name, value in values.items())


def describe(row: dict) -> str:
    parts = [row["task"]]
    for name in ("sparse", "dense"):
        if f"{name}_edges" in row:
            parts.append(
                f"{name}: {row[f'{name}_edges']:,} edges / {row[f'{name}_nodes']} nodes "
                f"(loss {row[f'{name}_circuit_loss']:.3f}, {row[f'{name}_seconds']:.0f} s)"
            )
        else:
            parts.append(f"{name}: target not reached")
    if "sparse_edges" in row and "dense_edges" in row:
        parts.append(f"dense/sparse {row['dense_edges'] / max(1, row['sparse_edges']):.1f}x")
    return " | ".join(parts)


def summarise(rows: list[dict]) -> None:
    both = [row for row in rows if "sparse_edges" in row and "dense_edges" in row]
    seconds = [
        row[f"{n}_seconds"] for row in rows for n in ("sparse", "dense") if f"{n}_seconds" in row
    ]
    print(f"\ntasks done by both and pruned on both: {len(both)} of {len(rows)}")
    if not both:
        return
    sparse = geometric_mean([row["sparse_edges"] for row in both])
    dense = geometric_mean([row["dense_edges"] for row in both])
    print(f"edges, geometric mean: sparse {sparse:,.1f}, dense {dense:,.1f}")
    print(f"dense edges / sparse edges = {dense / sparse:.1f}x (goal >= 10)")
    print(f"prune wall time: median {statistics.median(seconds):.0f} s, max {max(seconds):.0f} s")


if __name__ == "__main__":
    main()
