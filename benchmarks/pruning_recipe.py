"""Pruning recipe, one part at a time: the defaults against the defaults with one part undone.

Each part of the recipe (docs/pruning-recipe.md) has a switch in `PruneConfig`. This script
prunes one model's task with the defaults and once per part switched back to what came before
it, all else equal, and prints circuit nodes, edges, test loss and wall time of each. Prunes
are stored in the prune store (SQLite) and reused by a later run with the same settings;
--fresh prunes again.

    .venv/bin/python benchmarks/pruning_recipe.py models/reference-sparse \
        --task single_double_quote
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

from sparsecircuits.circuits import PruneConfig
from sparsecircuits.circuits.store import PruneStore, stored_prune_metrics
from sparsecircuits.circuits.sweep import DEFAULT_SETTINGS
from sparsecircuits.circuits.task_data import task_splits
from sparsecircuits.errors import UserError
from sparsecircuits.loading import load_run

# Each part of the recipe and the setting that undoes it (what the code did before issue 11).
PARTS = {
    "second score (mean tau) for ties": {"tie_break": "index"},
    "calibration learned with the masks": {"learned_calibration": False},
    "clean-up of idle nodes": {"clean_up": False},
    "trim margin 0.01": {"trim_margin": 0.0},
    "regrowth by need": {"regrow_by_need": False},
    "Adam beta2 0.95 and clipping": {"beta2": 0.999, "grad_clip": math.inf},  # inf: no clip
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--task", default="single_double_quote")
    parser.add_argument("--parts", help=f"comma-separated subset of: {'; '.join(PARTS)}")
    parser.add_argument("--sweep", type=int, default=DEFAULT_SETTINGS)
    parser.add_argument("--fresh", action="store_true", help="prune again, ignore stored results")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    run = load_run(args.model)
    splits = task_splits(run, args.task, None)
    store = PruneStore()
    parts = args.parts.split(",") if args.parts else list(PARTS)
    unknown = [part for part in parts if part not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {unknown}; choose from {list(PARTS)}")
    variants = {"defaults": {}} | {f"without {part}": PARTS[part] for part in parts}
    rows = []
    for name, undo in variants.items():
        config = dataclasses.replace(PruneConfig(sweep=args.sweep), **undo)
        print(f"== {name} {undo or ''}", flush=True)
        row = {"variant": name, "settings": undo}
        try:
            metrics = stored_prune_metrics(
                run, args.model, splits, config, store, args.fresh, print
            )
            row |= {key: metrics[key] for key in ("nodes", "edges", "circuit_loss", "seconds")}
        except UserError as error:
            row["error"] = str(error)
        rows.append(row)

    print(f"\n{args.model.name}, {args.task}: the defaults and each part undone")
    print("| variant | nodes | edges | test loss | wall time |")
    print("|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['variant']} | no circuit: {row['error']} | | | |")
            continue
        print(
            f"| {row['variant']} | {row['nodes']:,} | {row['edges']:,} | "
            f"{row['circuit_loss']:.3f} | {row['seconds']:.0f} s |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
