"""How explainable are a sparse and a dense model's MLP neurons? Mean scores per layer, offline
explainer against the three baselines, side by side in one run (seed 003 predicts that
sparser models are more explainable).

Every k-th neuron of every layer is explained by each backend on the same activation records
(one streaming pass per model and layer), scored on the held-out half. Prints, per model,
layer and backend, the mean top-and-random and random-only correlation and the mean ablation
score, each over the units it is defined for, with the number of units it is not (e.g. never
active on random text) as "(N unscored)". Everything lands in one SQLite database (--db)
for later queries.

    .venv/bin/python benchmarks/explain_scores.py models/reference-sparse-topk \
        models/reference-dense-sink-budget --per-layer 32
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import sparsecircuits
from sparsecircuits.circuits.circuit_file import model_hash
from sparsecircuits.explain.baselines import NextTokenBaseline, TokenTableBaseline, WeightBaseline
from sparsecircuits.explain.offline import OfflineExplainer, OfflineSimulator
from sparsecircuits.explain.pipeline import ScoreSettings, explain_units
from sparsecircuits.explain.records import RecordSettings
from sparsecircuits.explain.store import ExplanationStore
from sparsecircuits.explain.units import layer_units


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--per-layer", type=int, default=32, help="neurons per layer")
    parser.add_argument("--tokens", type=int, default=200_000)
    parser.add_argument("--db", type=Path, default=Path("runs/explain_scores.sqlite"))
    args = parser.parse_args()

    store = ExplanationStore(args.db)
    settings = RecordSettings(n_tokens=args.tokens)
    table = []
    for path in args.models:
        run = sparsecircuits.load(path)
        backends = {
            "offline": (OfflineExplainer(), OfflineSimulator()),
            "token table": (TokenTableBaseline(),) * 2,
            "weights": (WeightBaseline(run),) * 2,
            "next token": (NextTokenBaseline(), OfflineSimulator()),
        }
        width = run.model_config.d_mlp
        step = max(1, width // args.per_layer)
        for layer in range(run.model_config.n_layer):
            units = layer_units(run.model_config, layer, "mlp", range(0, width, step))
            for name, (explainer, simulator) in backends.items():
                rows = explain_units(
                    run, str(path), units, explainer, simulator, store, settings,
                    ScoreSettings(), progress=False, log=lambda line: None,
                )  # fmt: skip
                if not rows:  # measured by an earlier run: read them back
                    rows = [
                        dict(row)
                        for row in store.for_model(model_hash(run))
                        if (row["layer"], row["kind"], row["explainer"])
                        == (layer, "mlp", explainer.name)
                    ]
                table.append(summary(path.name, layer, name, rows))
                print(format_row(table[-1]), flush=True)
    print("\n| model | layer | backend | top-and-random | random-only | ablation | units |")
    print("|---|---|---|---|---|---|---|")
    for row in table:
        print(format_row(row))


def summary(model: str, layer: int, backend: str, rows: list[dict]) -> dict:
    """Mean of each score over the units it is defined for, and how many units had none."""

    def mean(column: str) -> tuple[float | None, int]:
        values = [row[column] for row in rows if row[column] is not None]
        return (statistics.mean(values) if values else None), len(rows) - len(values)

    return {
        "model": model,
        "layer": layer,
        "backend": backend,
        "units": len(rows),
        "top_and_random": mean("score_top_and_random"),
        "random_only": mean("score_random_only"),
        "ablation": mean("ablation_score"),
    }


def format_row(row: dict) -> str:
    def fmt(pair: tuple[float | None, int]) -> str:
        value, unscored = pair
        shown = "-" if value is None else f"{value:.3f}"
        return f"{shown} ({unscored} unscored)" if unscored else shown

    return (
        f"| {row['model']} | {row['layer']} | {row['backend']} | {fmt(row['top_and_random'])} | "
        f"{fmt(row['random_only'])} | {fmt(row['ablation'])} | {row['units']} |"
    )


if __name__ == "__main__":
    main()
