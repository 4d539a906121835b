"""Circuit nodes as units: explain a circuit file's nodes and write the explanations back
into it, where `sparsecircuits circuit draw` shows them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sparsecircuits.circuits.circuit_file import model_hash, read_circuit
from sparsecircuits.errors import UserError
from sparsecircuits.explain.store import ExplanationStore
from sparsecircuits.explain.units import Unit, check_units
from sparsecircuits.files import write_json_atomic
from sparsecircuits.loading import Run
from sparsecircuits.validation import load_json


def circuit_units(run: Run, path: Path) -> list[Unit]:
    """The units of a circuit file's nodes, refused if the file is of another model."""
    circuit = read_circuit(path)
    if circuit["model"]["sha256"] != model_hash(run):
        raise UserError(f"{path} is a circuit of another model ({circuit['model']['path']})")
    units = [Unit.parse(node["id"]) for node in circuit["nodes"]]
    return check_units(run.model_config, units)


def annotate_circuit(
    path: Path,
    store: ExplanationStore,
    run: Run,
    explainer: str,
    log: Callable[[str], None] = print,
) -> None:
    """Write each node's latest explanation (and its score) into the circuit file, where
    `circuit draw` shows it: on hover, and as the node's label when short."""
    rows = {
        row["unit"]: row
        for row in store.for_model(model_hash(run))
        if row["explainer"] == explainer
    }
    record = load_json(path, dict, "circuit file")  # already checked by circuit_units
    for node in record["nodes"]:
        row = rows.get(Unit.parse(node["id"]).name)
        if row is not None:
            node["explanation"] = row["explanation"]
            node["explanation_score"] = row["score_top_and_random"]
    write_json_atomic(path, record)
    log(f"added the explanations to {path} (sparsecircuits circuit draw shows them)")
