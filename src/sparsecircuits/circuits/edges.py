"""Edges of a circuit: nonzero weights whose two ends are both kept nodes (spec section 3).

Weights join: norm output channels -> q/k/v channels (q/k/v projections), value channels ->
attention output channels (output projection, through the attention mixing), MLP input
channels -> neurons and neurons -> MLP output channels. The residual stream itself is an
identity, not a weight, so it adds no edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sparsecircuits.circuits.nodes import NodeGroup
from sparsecircuits.model import GPT

# (source kind, target kind, weight attribute path inside a block); weights are [out, in].
WEIGHTED_LINKS = (
    ("attn_in", "q", "attn.q_proj.weight"),
    ("attn_in", "k", "attn.k_proj.weight"),
    ("attn_in", "v", "attn.v_proj.weight"),
    ("v", "attn_out", "attn.out_proj.weight"),
    ("mlp_in", "mlp_neuron", "mlp.fc.weight"),
    ("mlp_neuron", "mlp_out", "mlp.proj.weight"),
)


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    weight: float


def split_by_group(
    groups: list[NodeGroup], keep: torch.Tensor
) -> dict[tuple[int, str], torch.Tensor]:
    """Kept node indices of every group, keyed by (layer, kind)."""
    kept, start = {}, 0
    for group in groups:
        kept[(group.layer, group.kind)] = keep[start : start + group.width].nonzero().flatten()
        start += group.width
    return kept


def count_edges(model: GPT, groups: list[NodeGroup], keep: torch.Tensor) -> int:
    return len(circuit_edges(model, groups, keep))


@torch.no_grad()
def circuit_edges(model: GPT, groups: list[NodeGroup], keep: torch.Tensor) -> list[Edge]:
    kept = split_by_group(groups, keep)
    edges = []
    for layer, block in enumerate(model.blocks):
        for source_kind, target_kind, weight_path in WEIGHTED_LINKS:
            sources, targets = kept[(layer, source_kind)], kept[(layer, target_kind)]
            if not len(sources) or not len(targets):
                continue
            weight = block.get_parameter(weight_path)[targets][:, sources]
            for row, column in weight.nonzero().tolist():
                edges.append(
                    Edge(
                        f"{layer}.{source_kind}.{int(sources[column])}",
                        f"{layer}.{target_kind}.{int(targets[row])}",
                        float(weight[row, column]),
                    )
                )
    return edges
