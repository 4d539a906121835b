"""Circuit discovery: edge attribution patching (EAP, one forward and one backward pass per
task, then a search over the number of edges) against this project's pruning, at the same
target loss on the same pairs, circuits measured the same way (calibrated task loss, edges =
nonzero weights between kept nodes). Prunes come from the prune store when already measured
(as benchmarks/circuit_size.py stores them).

    .venv/bin/python benchmarks/eap_vs_pruning.py models/reference-sparse-topk \\
        --tasks single_double_quote,if_equals,var_if
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sparsecircuits.circuits import PruneConfig
from sparsecircuits.circuits.attribution import eap_circuit
from sparsecircuits.circuits.frontier import geometric_mean
from sparsecircuits.circuits.space import circuit_space
from sparsecircuits.circuits.store import PruneStore, stored_prune_metrics
from sparsecircuits.circuits.sweep import DEFAULT_SETTINGS
from sparsecircuits.circuits.task_data import task_splits
from sparsecircuits.loading import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--tasks", default="single_double_quote,if_equals,var_if")
    parser.add_argument("--target-loss", type=float, default=0.15)
    parser.add_argument("--sweep", type=int, default=DEFAULT_SETTINGS)
    args = parser.parse_args()
    run = load_run(args.model)
    config = PruneConfig(target_loss=args.target_loss)
    store = PruneStore()
    rows = []
    for task in args.tasks.split(","):
        splits = task_splits(run, task, None)
        pruned = stored_prune_metrics(run, args.model, splits, config, args.sweep, store)
        eap = eap_circuit(circuit_space(load_run(args.model), "mean"), splits, args.target_loss)
        rows.append((task, pruned, eap))
        print(
            f"{task}: pruning {pruned['edges']:,} edges / {pruned['nodes']} nodes "
            f"(test loss {pruned['circuit_loss']:.3f}, {pruned['seconds']:.0f} s) | "
            f"EAP {eap.edges:,} edges / {eap.nodes} nodes from the top {eap.k:,} scored "
            f"(test loss {eap.test_loss:.3f}, {eap.seconds:.1f} s) | "
            f"EAP / pruning edges {eap.edges / max(1, pruned['edges']):.1f}x",
            flush=True,
        )
    pruned_mean = geometric_mean([pruned["edges"] for _, pruned, _ in rows])
    eap_mean = geometric_mean([eap.edges for _, _, eap in rows])
    print(f"edges, geometric mean over {len(rows)} tasks:", end=" ")
    print(f"pruning {pruned_mean:,.1f}, EAP {eap_mean:,.1f}")
    print(f"EAP / pruning = {eap_mean / pruned_mean:.1f}x")


if __name__ == "__main__":
    main()
