"""One circuit, end to end, for a report: prune a task, save the circuit file, draw it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sparsecircuits.circuits.circuit_file import outcome_to_record, write_circuit
from sparsecircuits.circuits.config import PruneConfig
from sparsecircuits.circuits.draw import circuit_svg, node_activations, write_drawing
from sparsecircuits.circuits.pipeline import prune_to_target_loss
from sparsecircuits.circuits.sweep import DEFAULT_SETTINGS
from sparsecircuits.circuits.task_data import task_splits
from sparsecircuits.loading import Run, load_run
from sparsecircuits.tasks import task_pairs


def prune_and_draw(
    model_path: Path,
    out: Path,
    task: str = "single_double_quote",
    steps: int = PruneConfig.steps,
    sweep: int = DEFAULT_SETTINGS,
    log: Callable[[str], None] = print,
) -> dict:
    """Prune `task` in the model at `model_path`; write the circuit file and its page."""
    loaded = load_run(model_path)
    splits = task_splits(loaded, task, None)
    outcome = prune_to_target_loss(loaded, splits, PruneConfig(steps=steps, sweep=sweep), log=log)
    record = outcome_to_record(loaded, outcome)
    write_circuit(record, out / "circuit.json")
    return draw_for_report(loaded, record, out, outcome.space.size)


def draw_for_report(loaded: Run, record: dict, out: Path, total_nodes: int) -> dict:
    """The circuit's page in `out` and what a report shows of it (drawn again after its
    nodes are explained, so the explanations show)."""
    task = record["task"]
    prompts = [
        text for pair in task_pairs(task, "test", 2) for text in (pair.prompt_a, pair.prompt_b)
    ]
    write_drawing(record, out / "circuit.html", loaded, prompts)
    activations = node_activations(loaded, record, prompts)
    return {
        "record": record,
        "svg": circuit_svg(record, activations),
        "page": "circuit.html",
        "total_nodes": total_nodes,
    }
