"""Circuit discovery: edge attribution patching (EAP, one forward and one backward pass per
task, then a search over the number of edges) against this project's pruning, at the same
target loss on the same pairs, circuits measured the same way (calibrated task loss, edges =
nonzero weights between kept nodes).

EAP is reported twice: raw (the top-k edges' endpoints) and post-processed with exactly what
every pruned circuit gets (clean-up of idle nodes, trimming, verification on other pairs), so
the ratio measures the discovery method, not the post-processing. Every size is the median
over pruning seeds (the pair draws; for pruning also the mask init), with its range; prunes
come from the prune store when already measured (as benchmarks/circuit_size.py stores them).

    .venv/bin/python benchmarks/eap_vs_pruning.py models/reference-sparse-topk \\
        --tasks single_double_quote,if_equals,var_if --json eap.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sparsecircuits.circuits import PruneConfig
from sparsecircuits.circuits.attribution import eap_outcome
from sparsecircuits.circuits.spread import bootstrap_size_ratio, median_range
from sparsecircuits.circuits.store import PruneStore, stored_prune_metrics
from sparsecircuits.circuits.task_data import task_splits
from sparsecircuits.errors import UserError
from sparsecircuits.loading import load_run

METHODS = ("pruning", "eap_raw", "eap_post_processed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--tasks", default="single_double_quote,if_equals,var_if")
    parser.add_argument("--target-loss", type=float, default=0.15)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sweep", type=int, default=0, help="as prune --sweep (0: the grid)")
    parser.add_argument("--json", type=Path, help="also write the rows and ratios here")
    args = parser.parse_args()
    run = load_run(args.model)
    store = PruneStore()
    edges: dict[str, dict[str, list[int]]] = {method: {} for method in METHODS}
    seconds: dict[str, list[float]] = {method: [] for method in METHODS}
    for task in args.tasks.split(","):
        for seed in range(args.seeds):
            splits = task_splits(run, task, None, seed)
            config = PruneConfig(target_loss=args.target_loss, sweep=args.sweep, seed=seed)
            measured = {}
            try:
                measured["pruning"] = stored_prune_metrics(run, args.model, splits, config, store)
                raw = eap_outcome(run, splits, config, post_process=False, log=lambda _: None)
                measured["eap_raw"] = raw.metrics
                post = eap_outcome(run, splits, config, post_process=True, log=lambda _: None)
                measured["eap_post_processed"] = post.metrics
            except UserError as error:
                print(f"{task} seed {seed}: {error}", flush=True)
            for method, metrics in measured.items():
                edges[method].setdefault(task, []).append(metrics["edges"])
                seconds[method].append(metrics["seconds"])
        print(describe(task, edges), flush=True)
    summary = {"edges": edges, "seconds": seconds, "ratios": {}}
    for method in METHODS[1:]:
        try:
            estimate = bootstrap_size_ratio(edges[method], edges["pruning"])
        except ValueError:
            continue
        summary["ratios"][f"{method} / pruning"] = estimate.to_dict()
        print(f"{method} / pruning edges: {estimate.describe()}")
    for method, times in seconds.items():
        if times:
            print(f"{method} wall time per circuit: {median_range(times)['median']:.1f} s median")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


def describe(task: str, edges: dict[str, dict[str, list[int]]]) -> str:
    parts = [task]
    for method in METHODS:
        sizes = edges[method].get(task)
        if not sizes:
            parts.append(f"{method}: no circuit")
            continue
        spread = median_range(sizes)
        parts.append(
            f"{method}: {spread['median']:,.0f} edges [{spread['min']:,}-{spread['max']:,}]"
        )
    return " | ".join(parts)


if __name__ == "__main__":
    main()
