"""The circuit file: a JSON record of a pruned circuit that can be checked and drawn later.

Schema (format "sparsecircuits.circuit/1"), documented in docs/circuits.md:
  task, target_loss, ablation, model {path, sha256, n_layer, d_model, d_mlp},
  nodes [{id, layer, kind, index, mean, score}], edges [{source, target, weight}],
  calibration {scale, shift {token_id: value}}, metrics {...}, prune_config {...}, sweep [...]
Node ids are "LAYER.KIND.INDEX"; the final norm is layer n_layer, kind "final_norm".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from sparsecircuits.circuits.edges import circuit_edges
from sparsecircuits.circuits.nodes import NodeGroup, node_groups
from sparsecircuits.circuits.pipeline import PruneOutcome
from sparsecircuits.circuits.prune import Calibration
from sparsecircuits.errors import UserError
from sparsecircuits.files import write_json_atomic
from sparsecircuits.train import Run

FORMAT = "sparsecircuits.circuit/1"


def model_hash(run: Run) -> str:
    """Hash of the weights themselves, so a re-saved or exported copy still matches."""
    digest = hashlib.sha256()
    for name, tensor in sorted(run.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def outcome_to_record(run: Run, outcome: PruneOutcome) -> dict:
    nodes, start = [], 0
    for group in outcome.groups:
        part = outcome.keep[start : start + group.width]
        for index in part.nonzero().flatten().tolist():
            nodes.append(
                {
                    "id": group.node_id(index),
                    "layer": group.layer,
                    "kind": group.kind,
                    "index": index,
                    "mean": float(outcome.replacements[group.hook][index]),
                    "score": float(outcome.scores[start + index]),
                }
            )
        start += group.width
    edges = circuit_edges(run.model, outcome.groups, outcome.keep)
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
    try:
        record = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"no such circuit file: {path}") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read circuit file {path}: {error}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise UserError(f"{path} is not a sparsecircuits circuit file (format {FORMAT})")
    return record


@dataclass
class LoadedCircuit:
    keep: torch.Tensor
    groups: list[NodeGroup]
    calibration: Calibration
    record: dict


def circuit_on_model(record: dict, run: Run) -> LoadedCircuit:
    """The circuit's keep-vector on `run`'s nodes; refuses a circuit of another model shape."""
    groups = node_groups(run.model_config)
    offsets, start = {}, 0
    for group in groups:
        offsets[(group.layer, group.kind)] = (start, group.width)
        start += group.width
    keep = torch.zeros(start, dtype=torch.bool)
    for node in record["nodes"]:
        key = (node["layer"], node["kind"])
        if key not in offsets or not 0 <= node["index"] < offsets[key][1]:
            raise UserError(f"circuit node {node['id']} does not exist in the model at {run.path}")
        keep[offsets[key][0] + node["index"]] = True
    return LoadedCircuit(keep, groups, Calibration.from_dict(record["calibration"]), record)
