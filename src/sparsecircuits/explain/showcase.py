"""Explanations for a report: a circuit's nodes and a sample of neurons, offline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sparsecircuits.explain.circuit_nodes import annotate_circuit, circuit_units
from sparsecircuits.explain.offline import OfflineExplainer, OfflineSimulator
from sparsecircuits.explain.pipeline import ScoreSettings, explain_units
from sparsecircuits.explain.records import RecordSettings
from sparsecircuits.explain.store import ExplanationStore
from sparsecircuits.explain.units import layer_units
from sparsecircuits.loading import Run


def explain_for_report(
    run: Run,
    run_path: Path,
    circuit_file: Path | None,
    db: Path,
    sample_layer: int = 1,
    sample: int = 32,
    tokens: int = 50_000,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Explain the circuit's nodes (written into its file) and every k-th MLP neuron of one
    layer in one pass; the stored rows, best top-and-random score first."""
    width = run.model_config.d_mlp
    units = layer_units(
        run.model_config, sample_layer, "mlp", range(0, width, max(1, width // sample))
    )
    if circuit_file is not None:
        units = list(dict.fromkeys(circuit_units(run, circuit_file) + units))
    store = ExplanationStore(db)
    explainer = OfflineExplainer()
    rows = explain_units(
        run,
        str(run_path),
        units,
        explainer,
        OfflineSimulator(),
        store,
        RecordSettings(n_tokens=tokens),
        ScoreSettings(),
        progress=False,
        log=log,
    )
    if circuit_file is not None:
        annotate_circuit(circuit_file, store, run, explainer.name, log)
    return sorted(rows, key=lambda row: -(row["score_top_and_random"] or -2.0))
