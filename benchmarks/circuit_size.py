"""Circuit size: a weight-sparse model against dense ones, side by side in one run.

For every task a sparse and a dense model both do (full-model task loss at or below the
target), prune each to the target loss with the same settings and compare circuit edges. Give
several dense models to compare at matched pretraining loss and at a matched training budget
at once. Prints one row per task, the geometric mean of edges of each model, the ratios (the
paper saw ~16x at matched loss) and the wall time of each prune. With --controls, the sparse
model's circuits also get the controls of `prune --controls` (random weights, nonsense answers,
the other ablation). Prunes are stored in the prune store (SQLite) and reused by a later run
or by `sparsecircuits frontier` with the same settings; --fresh prunes again.

    .venv/bin/python benchmarks/circuit_size.py models/reference-sparse \
        models/reference-dense-matched models/reference-dense
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from sparsecircuits.circuits import PruneConfig
from sparsecircuits.circuits.controls import pruned_controls
from sparsecircuits.circuits.frontier import geometric_mean
from sparsecircuits.circuits.store import PruneStore, stored_prune_metrics
from sparsecircuits.circuits.sweep import DEFAULT_SETTINGS
from sparsecircuits.circuits.task_data import task_splits
from sparsecircuits.errors import UserError
from sparsecircuits.loading import load_run
from sparsecircuits.tasks import TASKS, evaluate_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sparse", type=Path)
    parser.add_argument("dense", type=Path, nargs="+", help="one or more dense models")
    parser.add_argument("--tasks", help="comma-separated task names (default: all 20)")
    parser.add_argument("--target-loss", type=float, default=0.15)
    parser.add_argument(
        "--sweep", type=int, default=DEFAULT_SETTINGS, help="settings per prune, as prune --sweep"
    )
    parser.add_argument("--steps", type=int, default=PruneConfig.steps)
    parser.add_argument("--fresh", action="store_true", help="prune again, ignore stored results")
    parser.add_argument("--controls", action="store_true", help="controls for the sparse model")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    paths = {"sparse": args.sparse} | {path.name: path for path in args.dense}
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
        if full["sparse"] > args.target_loss or min(full.values()) > args.target_loss:
            print(f"{task}: skipped, not done by two models (full losses {fmt(full)})", flush=True)
            rows.append(row)
            continue
        for name, run in runs.items():
            if full[name] > args.target_loss:
                continue
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
        if args.controls and "sparse_edges" in row:
            row["controls"] = pruned_controls(runs["sparse"], splits["sparse"], config, args.sweep)
        rows.append(row)
        print(describe(row, list(runs)), flush=True)
    for dense in list(runs)[1:]:
        summarise(rows, dense)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def fmt(values: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.3f}" for name, value in values.items())


def describe(row: dict, names: list[str]) -> str:
    parts = [row["task"]]
    for name in names:
        if f"{name}_edges" in row:
            parts.append(
                f"{name}: {row[f'{name}_edges']:,} edges / {row[f'{name}_nodes']} nodes "
                f"(loss {row[f'{name}_circuit_loss']:.3f}, {row[f'{name}_seconds']:.0f} s)"
            )
        else:
            parts.append(f"{name}: target not reached")
    for name, control in row.get("controls", {}).items():
        outcome = f"{control['edges']} edges, met" if control["met"] else "not met"
        parts.append(f"control {name}: {outcome}")
    return " | ".join(parts)


def summarise(rows: list[dict], dense: str) -> None:
    both = [row for row in rows if "sparse_edges" in row and f"{dense}_edges" in row]
    seconds = [
        row[f"{n}_seconds"] for row in both for n in ("sparse", dense) if f"{n}_seconds" in row
    ]
    print(f"\nsparse vs {dense}: tasks pruned on both: {len(both)} of {len(rows)}")
    if not both:
        return
    sparse_mean = geometric_mean([row["sparse_edges"] for row in both])
    dense_mean = geometric_mean([row[f"{dense}_edges"] for row in both])
    print(f"edges, geometric mean: sparse {sparse_mean:,.1f}, {dense} {dense_mean:,.1f}")
    print(f"{dense} edges / sparse edges = {dense_mean / sparse_mean:.1f}x (goal >= 10)")
    print(f"prune wall time: median {statistics.median(seconds):.0f} s, max {max(seconds):.0f} s")


if __name__ == "__main__":
    main()
