"""The circuit file: a JSON record of a pruned circuit that can be checked and drawn later.

Schema (format "sparsecircuits.circuit/1"), documented in docs/circuits.md:
  task, target_loss, ablation, model {path, sha256, n_layer, d_model, d_mlp},
  nodes [{id, layer, kind, index, mean, score}], edges [{source, target, weight}],
  calibration {scale, shift {token_id: value}}, metrics {...}, prune_config {...}, sweep [...]
Node ids are "LAYER.KIND.INDEX"; the final norm is layer n_layer, kind "final_norm"; the token
embedding's channels (pruned with `embedding_nodes`) are layer 0, kind "embed".
`read_circuit` checks a file against this schema (CircuitFile) and against itself, so a damaged
file is one error line naming the field, not a KeyError in whatever reads it next.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, NonNegativeInt, PositiveInt

from sparsecircuits.circuits.config import STRICT_OPTIONS
from sparsecircuits.circuits.nodes import BLOCK_NODE_KINDS
from sparsecircuits.circuits.pipeline import PruneOutcome
from sparsecircuits.circuits.prune import Calibration
from sparsecircuits.circuits.space import CircuitSpace
from sparsecircuits.errors import UserError
from sparsecircuits.files import write_json_atomic
from sparsecircuits.loading import Run
from sparsecircuits.validation import field_error, load_json, validate

FORMAT = "sparsecircuits.circuit/1"


def model_hash(run: Run) -> str:
    """Hash of the weights themselves, so a re-saved or exported copy still matches."""
    return run.weights_sha256


def outcome_to_record(run: Run, outcome: PruneOutcome) -> dict:
    space, nodes = outcome.space, []
    for group in space.groups:
        span = space.span(group)
        for index in outcome.keep[span].nonzero().flatten().tolist():
            nodes.append(
                {
                    "id": group.node_id(index),
                    "layer": group.layer,
                    "kind": group.kind,
                    "index": index,
                    "mean": float(space.replacements[group.hook][index]),
                    "score": float(outcome.scores[span][index]),
                }
            )
    edges = space.edges(outcome.keep)
    config = run.model_config
    return {
        "format": FORMAT,
        "task": outcome.task,
        "target_loss": outcome.config.target_loss,
        "ablation": outcome.config.ablation,
        "model": {
            "path": str(run.path),
            "sha256": model_hash(run),
            "n_layer": config.n_layer,
            "d_model": config.d_model,
            "d_mlp": config.d_mlp,
            "d_head": config.d_head,
            "d_attn": config.d_attn,
        },
        "nodes": nodes,
        "edges": [{"source": e.source, "target": e.target, "weight": e.weight} for e in edges],
        "calibration": outcome.calibration.to_dict(),
        "metrics": outcome.metrics,
        "prune_config": outcome.config.to_dict(),
        "sweep": outcome.sweep,
    }


def write_circuit(record: dict, path: Path) -> None:
    write_json_atomic(path, record, indent=1)


def read_circuit(path: Path) -> dict:
    """A circuit file, checked against its schema and against itself (every node inside the
    model it records, every edge between two of its nodes), as plain data."""
    record = load_json(path, object, "circuit file")
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise UserError(f"{path} is not a sparsecircuits circuit file (format {FORMAT})")
    circuit = validate(CircuitFile, record, path)
    check_nodes_and_edges(circuit, path)
    check_strict_options(circuit, path)
    return circuit.model_dump(mode="json", exclude_unset=True)  # token ids as keys again


def strict_options_of(record: dict) -> dict[str, bool]:
    """The strictness switches a circuit was pruned with (all off in files written before
    they existed), to measure it again as it was pruned."""
    settings = record.get("prune_config") or {}
    return {name: settings.get(name) is True for name in STRICT_OPTIONS.values()}


def check_strict_options(circuit: CircuitFile, source: Path | str) -> None:
    """Strictness switches are true or false, and embedding nodes come with theirs on."""
    for name in STRICT_OPTIONS.values():
        value = circuit.prune_config.get(name, False)
        if not isinstance(value, bool):
            message = f"expected true or false, got {value!r}"
            raise field_error(source, f"prune_config.{name}", message)
    if circuit.prune_config.get("embedding_nodes") is not True:
        for number, node in enumerate(circuit.nodes):
            if node.kind == "embed":
                message = "an embedding node needs prune_config.embedding_nodes true"
                raise field_error(source, f"nodes[{number}].kind", message)


class CircuitModel(BaseModel):
    """The model a circuit was pruned from."""

    model_config = ConfigDict(extra="allow")
    path: str
    sha256: str
    n_layer: PositiveInt
    d_model: PositiveInt
    d_mlp: PositiveInt
    d_head: PositiveInt = 16  # not recorded by the first circuit files
    d_attn: PositiveInt | None = None  # q/k/v width; d_model where not recorded


def channel_width(model: CircuitModel, kind: str) -> tuple[str, int]:
    """The recorded width of a node kind's layer, with the field that records it."""
    if kind == "mlp_neuron":
        return "d_mlp", model.d_mlp
    if kind in ("q", "k", "v") and model.d_attn is not None:
        return "d_attn", model.d_attn
    return "d_model", model.d_model


class CircuitSAE(BaseModel):
    """The SAE or transcoder whose latents replace a layer's neurons (prune --sae)."""

    model_config = ConfigDict(extra="allow")
    folder: str
    sha256: str
    layer: NonNegativeInt
    kind: Literal["mlp_sae", "mlp_out_sae"]
    d_sae: PositiveInt


class CircuitNode(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    layer: NonNegativeInt
    kind: str
    index: NonNegativeInt
    mean: float
    score: float


class CircuitEdge(BaseModel):
    model_config = ConfigDict(extra="allow")
    source: str
    target: str
    weight: float


class CalibrationRecord(BaseModel):
    scale: float
    shift: dict[NonNegativeInt, float]  # token id (a string key in JSON) -> shift

    def calibration(self) -> Calibration:
        return Calibration(self.scale, dict(self.shift))


class CircuitFile(BaseModel):
    """The schema of a circuit file (docs/circuits.md); keys it does not name are kept."""

    model_config = ConfigDict(extra="allow")
    format: str
    task: str
    target_loss: float
    ablation: Literal["mean", "zero"]
    model: CircuitModel
    nodes: list[CircuitNode]
    edges: list[CircuitEdge]
    calibration: CalibrationRecord
    metrics: dict[str, Any] = {}
    prune_config: dict[str, Any] = {}
    sweep: list[Any] = []
    sae: CircuitSAE | None = None


NODE_KINDS = ("embed", *(kind for kind, _ in BLOCK_NODE_KINDS), "final_norm")


def check_nodes_and_edges(circuit: CircuitFile, source: Path | str) -> None:
    """Every node exists in the circuit's own model; every edge joins two of its nodes."""
    for number, node in enumerate(circuit.nodes):
        problem = node_problem(node, circuit.model, circuit.sae)
        if problem is not None:
            field, message = problem
            raise field_error(source, f"nodes[{number}].{field}", message)
    ids = {node.id for node in circuit.nodes}
    for number, edge in enumerate(circuit.edges):
        for end, node_id in (("source", edge.source), ("target", edge.target)):
            if node_id not in ids:
                message = f"{node_id!r} is not one of the circuit's nodes"
                raise field_error(source, f"edges[{number}].{end}", message)


def node_problem(
    node: CircuitNode, model: CircuitModel, sae: CircuitSAE | None = None
) -> tuple[str, str] | None:
    """(field, what is wrong) when `node` cannot be a node of `model` (with `sae`'s latents
    in place of its layer's neurons), else None."""
    latent_kinds = {} if sae is None else {sae.kind: sae.d_sae, f"{sae.kind}_error": 1}
    if node.kind in latent_kinds:
        if node.layer != sae.layer:
            return "layer", f"{node.kind} nodes are at the SAE's layer {sae.layer}"
        if node.index >= latent_kinds[node.kind]:
            return "index", f"{node.index} is past the last {node.kind} node (sae.d_sae)"
        return None
    if sae is not None and node.kind == "mlp_neuron" and node.layer == sae.layer:
        return "kind", f"layer {sae.layer}'s neurons are replaced by the SAE's latents"
    if node.kind not in NODE_KINDS:
        return "kind", f"expected one of {', '.join(NODE_KINDS)}, got {node.kind!r}"
    if node.kind == "final_norm" and node.layer != model.n_layer:
        return "layer", f"final_norm is at layer model.n_layer {model.n_layer}, got {node.layer}"
    if node.kind == "embed" and node.layer != 0:
        return "layer", f"embed is at layer 0, got {node.layer}"
    if node.kind != "final_norm" and node.layer >= model.n_layer:
        return "layer", f"{node.layer} is past the last layer (model.n_layer {model.n_layer})"
    name, width = channel_width(model, node.kind)
    if node.index >= width:
        return "index", f"{node.index} is past the last {node.kind} channel (model.{name} {width})"
    expected_id = f"{node.layer}.{node.kind}.{node.index}"
    if node.id != expected_id:
        return "id", f"expected {expected_id!r} (layer.kind.index), got {node.id!r}"
    return None


@dataclass
class LoadedCircuit:
    keep: torch.Tensor
    calibration: Calibration
    record: dict


def circuit_on_model(record: dict, run: Run, space: CircuitSpace | None = None) -> LoadedCircuit:
    """The circuit's keep-vector in `run`'s circuit space (built when not given); refuses a
    circuit of another model shape."""
    circuit = validate(CircuitFile, record, "circuit")
    config = run.model_config
    theirs = (circuit.model.n_layer, circuit.model.d_model, circuit.model.d_mlp)
    ours = (config.n_layer, config.d_model, config.d_mlp)
    if theirs != ours:
        raise UserError(
            f"the circuit is of a model with n_layer {theirs[0]}, d_model {theirs[1]}, "
            f"d_mlp {theirs[2]}; the model at {run.path} has {ours[0]}, {ours[1]}, {ours[2]}"
        )
    embedding_nodes = strict_options_of(record)["embedding_nodes"]
    space = space or CircuitSpace(run.model, embedding_nodes=embedding_nodes)
    try:
        keep = space.keep_of([(node.layer, node.kind, node.index) for node in circuit.nodes])
    except (KeyError, IndexError):
        if circuit.sae is not None and not run.spliced:
            raise UserError(
                f"the circuit's nodes are latents of the SAE at {circuit.sae.folder}: splice it "
                "in (--sae)"
            ) from None
        raise UserError(f"a circuit node does not exist in the model at {run.path}") from None
    return LoadedCircuit(keep, circuit.calibration.calibration(), record)
