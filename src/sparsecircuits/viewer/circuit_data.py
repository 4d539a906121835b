"""What a circuit page shows when a node is clicked, computed once per circuit: each node's
activations on the task's prompts, its ablation effect on the task, its explanation and its
strongest excerpts, and the circuit's loss as its nodes are added in mask-score order."""

from __future__ import annotations

import matplotlib.pyplot as plt

from sparsecircuits.circuits.circuit_file import strict_options_of
from sparsecircuits.circuits.draw import node_activations
from sparsecircuits.circuits.prune import margin_loss
from sparsecircuits.circuits.space import circuit_space
from sparsecircuits.report.run_report import png_bytes
from sparsecircuits.tasks import TASKS, task_pairs
from sparsecircuits.tasks.pairs import encode_usable_pairs
from sparsecircuits.viewer.site import Site, ViewedCircuit, excerpts_of, node_unit

PROMPTS_SHOWN = 4  # task prompts whose activations each node shows (A and B of two pairs)
PAIRS_MEASURED = 64


def circuit_details(site: Site, circuit: ViewedCircuit, n_tokens: int) -> dict:
    """{"nodes": {id: details}, "prompts": [...], "curve": [[k, loss], ...]} for the page."""
    if circuit.run_id is None:
        return {"nodes": {}, "prompts": [], "curve": []}
    viewed = site.run(circuit.run_id)
    run, record = viewed.run, circuit.record
    if run.tokenizer_or_none is None:
        return {"nodes": {}, "prompts": [], "curve": []}
    pairs = task_pairs(circuit.task, "test", PAIRS_MEASURED) if circuit.task in TASKS else []
    prompts = [
        text for pair in pairs[: PROMPTS_SHOWN // 2] for text in (pair.prompt_a, pair.prompt_b)
    ]
    with viewed.lock:
        activations = node_activations(run, record, prompts) if prompts else {}
        effects, curve = ablation_effects(run, record, pairs)
    units = [node_unit(node["id"]) for node in record["nodes"]]
    excerpts = excerpts_of(viewed, [unit for unit in units if unit is not None], n_tokens)
    explained = {row["unit"]: row for row in site.explanations(viewed.id)}
    nodes = {}
    for node, of_node in zip(record["nodes"], units, strict=True):
        unit = None if of_node is None else of_node.name  # embedding channels have no unit
        row = explained.get(unit, {})
        shown = excerpts.get(unit)
        nodes[node["id"]] = {
            "kind": node["kind"],
            "mean": node.get("mean"),
            "score": node.get("score"),
            "activations": activations.get(node["id"], []),
            "ablation_effect": effects.get(node["id"]),
            "explanation": row.get("explanation"),
            "explanation_score": row.get("score_top_and_random"),
            "unit": unit,
            "top_excerpts": [] if shown is None else shown.top[:3],
            "max_activation": None if shown is None else shown.max_activation,
        }
    return {"nodes": nodes, "prompts": prompts, "curve": curve}


def ablation_effects(run, record: dict, pairs: list) -> tuple[dict, list]:  # noqa: ANN001
    """Task loss change when each circuit node alone is ablated in the full model, and the
    circuit's loss keeping its k highest-scored nodes, k = 1..n."""
    if not pairs:
        return {}, []
    batch, _ = encode_usable_pairs(pairs, run.tokenizer, run.model_config.n_ctx)
    if batch is None:
        return {}, []
    options = strict_options_of(record)  # the circuit ablated as it was pruned
    space = circuit_space(run, str(record.get("ablation", "mean")), **options)
    full = space.empty() | True
    base = float(margin_loss(space.margins(batch, full)).mean())
    nodes = record["nodes"]
    positions = {
        node["id"]: space.position(node["layer"], node["kind"], node["index"]) for node in nodes
    }
    effects = {}
    for node_id, position in positions.items():
        keep = full.clone()
        keep[position] = False
        effects[node_id] = float(margin_loss(space.margins(batch, keep)).mean()) - base
    order = sorted(nodes, key=lambda node: -float(node.get("score") or 0))
    keep, curve = space.empty(), []
    for k, node in enumerate(order, start=1):
        keep[positions[node["id"]]] = True
        curve.append([k, float(margin_loss(space.margins(batch, keep)).mean())])
    return effects, curve


def curve_png(curve: list, target: float | None) -> bytes:
    figure, axes = plt.subplots(figsize=(5, 2.8))
    axes.plot([k for k, _ in curve], [loss for _, loss in curve], marker=".")
    if isinstance(target, float):
        axes.axhline(target, color="grey", linestyle="--", label="target loss")
        axes.legend()
    axes.set_xlabel("nodes kept, highest mask score first")
    axes.set_ylabel("task loss (uncalibrated)")
    return png_bytes(figure, dpi=100)
