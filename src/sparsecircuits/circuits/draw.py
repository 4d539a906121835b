"""Draw a circuit as SVG (standalone, or inside an HTML page).

The look of the paper's figures: residual channels are vertical lines; the token embedding
writes them (embedding nodes, where the circuit was pruned with them), each layer reads them
(attention / MLP input nodes), computes (q/k/v channels grouped by head, MLP neurons) and
writes them back (attention / MLP output nodes). Edges are the circuit's nonzero weights,
blue for positive, red for negative, thicker for larger |weight|. Hovering a node shows its id,
its mean (the value it is replaced by when pruned) and its activations on a few task prompts.

This module only computes what goes where; the markup comes from the autoescaping templates in
`circuits/templates/` (see `sparsecircuits.render`). A circuit file can hold anything, so every
field is escaped there, numbers go through the `number` filter (anything else shows as "?"), and
a layer or index that is not a whole number is drawn at -1 and labelled "?" instead of failing.
"""

from __future__ import annotations

import numbers
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from markupsafe import Markup

from sparsecircuits.circuits.nodes import flat_channels, node_groups
from sparsecircuits.files import write_text_atomic
from sparsecircuits.loading import Run
from sparsecircuits.render import number, render, template_environment

TEMPLATES = template_environment("sparsecircuits.circuits")

RESIDUAL_KINDS = ("embed", "attn_in", "attn_out", "mlp_in", "mlp_out", "final_norm")
ROW_KINDS = ("embed", "attn_in", "qkv", "attn_out", "mlp_in", "mlp_neuron", "mlp_out")
ROW_NAMES = {
    "embed": "embedding",
    "qkv": "attn q k v",
    "mlp_neuron": "mlp neurons",
    "final_norm": "unembed",
}
UNLAYERED_ROWS = ("embed", "final_norm")  # rows labelled without their layer
COLOURS = {
    "embed": "#0891b2",
    "attn_in": "#6b7280",
    "q": "#d97706",
    "k": "#059669",
    "v": "#7c3aed",
    "attn_out": "#374151",
    "mlp_in": "#6b7280",
    "mlp_neuron": "#2563eb",
    "mlp_out": "#374151",
    "final_norm": "#111827",
}
UNKNOWN_COLOUR = "#9ca3af"  # a node kind no model has, or a weight that is not a number
LEGEND = (("q", "query"), ("k", "key"), ("v", "value"), ("mlp_neuron", "MLP neuron"))
LEGEND += (("attn_in", "residual read"), ("attn_out", "residual write"))
OPTIONAL_LEGEND = (("embed", "embedding"),)  # shown only when the circuit has such nodes
WEIGHTS_LEGEND_WIDTH = 250
SPACING, ROW_HEIGHT, MARGIN = 34, 58, 40
SHORT_EXPLANATION = 28  # characters: an explanation this short labels its node
LABEL_WIDTH, LEGEND_HEIGHT, LEGEND_WIDTH = 96, 30, 780


@dataclass(frozen=True)
class DrawnNode:
    """A node of a circuit file as drawn; `mean` and `score` are kept as found, for `number`."""

    id: str
    kind: str
    layer: int  # -1 where the file's layer is not a whole number
    index: int  # likewise
    mean: object
    score: object
    explanation: str | None = None  # written into the circuit file by `sparsecircuits explain`

    @property
    def row(self) -> str:
        return "qkv" if self.kind in ("q", "k", "v") else self.kind

    @property
    def colour(self) -> str:
        return COLOURS.get(self.kind, UNKNOWN_COLOUR)


def whole_number(value: object) -> int:
    """`value` if it is a whole number (a bool is not), else -1."""
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def finite(value: object) -> float | None:
    """`value` as a float if it is a real number (not a bool) a float holds finitely, else None."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value) if abs(value) <= sys.float_info.max else None  # not NaN, not inf
    return None


def drawn_nodes(record: dict) -> list[DrawnNode]:
    nodes = record.get("nodes")
    if not isinstance(nodes, list):
        return []
    return [
        DrawnNode(
            id=str(node.get("id")),
            kind=str(node.get("kind")),
            layer=whole_number(node.get("layer")),
            index=whole_number(node.get("index")),
            mean=node.get("mean"),
            score=node.get("score"),
            explanation=node.get("explanation")
            if isinstance(node.get("explanation"), str)
            else None,
        )
        for node in nodes
        if isinstance(node, dict)
    ]


def head_width(record: dict) -> int:
    """Channels per attention head (16 if the file does not say), to group q/k/v by head."""
    model = record.get("model")
    d_head = whole_number(model.get("d_head")) if isinstance(model, dict) else -1
    return d_head if d_head > 0 else 16


@torch.no_grad()
def node_activations(run: Run, record: dict, prompts: list[str]) -> dict[str, list[float]]:
    """Each circuit node's activation at the last token of each prompt, by node id; nodes the
    model does not have (a file from another model) are left out."""
    groups = {(g.layer, g.kind): g for g in node_groups(run.model_config, embedding_nodes=True)}
    nodes = [
        node
        for node in drawn_nodes(record)
        if (node.layer, node.kind) in groups
        and 0 <= node.index < groups[(node.layer, node.kind)].width
    ]
    hooks = sorted({groups[(node.layer, node.kind)].hook for node in nodes})
    values: dict[str, list[float]] = {node.id: [] for node in nodes}
    if not nodes:  # nothing to record: skip the forward passes
        return values
    device = next(run.model.parameters()).device
    for prompt in prompts:
        ids = run.tokenizer.encode(prompt)[-run.model_config.n_ctx :]
        with run.model.cache(hooks) as cache:
            run.model(torch.tensor([ids], device=device))
        for node in nodes:
            group = groups[(node.layer, node.kind)]
            value = flat_channels(cache[group.hook], group)[0, -1, node.index]
            values[node.id].append(float(value))
    return values


def used_rows(nodes: list[DrawnNode]) -> list[tuple[int, str]]:
    """(layer, row) pairs that hold a node, bottom (embedding side) to top (unembedding)."""
    order = {row: i for i, row in enumerate((*ROW_KINDS, "final_norm"))}
    rows = {(node.layer, node.row) for node in nodes}
    # Rows of kinds the model does not have go above the known rows of their layer.
    return sorted(rows, key=lambda key: (key[0], order.get(key[1], len(order)), key[1]))


def layout(
    nodes: list[DrawnNode], d_head: int
) -> tuple[dict[str, tuple[float, float]], list[int], float, float]:
    """Positions of every node, the residual channels drawn, and the canvas size.

    Only rows holding a node are drawn, so a circuit spread over a deep model stays compact.
    """
    channels = sorted({node.index for node in nodes if node.kind in RESIDUAL_KINDS})
    x_of_channel = {c: LABEL_WIDTH + MARGIN + i * SPACING for i, c in enumerate(channels)}
    rows = used_rows(nodes)
    members: dict[tuple[int, str], list[DrawnNode]] = {row: [] for row in rows}
    for node in nodes:
        members[(node.layer, node.row)].append(node)
    widest = max([len(channels)] + [len(m) for m in members.values()] + [4])
    width = max(LABEL_WIDTH + 2 * MARGIN + (widest - 1) * SPACING, LEGEND_WIDTH)
    height = 2 * MARGIN + max(len(rows) - 1, 0) * ROW_HEIGHT
    positions = {}
    for position, row in enumerate(rows):
        y = height - MARGIN - position * ROW_HEIGHT
        if row[1] in RESIDUAL_KINDS:
            for node in members[row]:
                positions[node.id] = (x_of_channel[node.index], y)
            continue
        # q/k/v channels are grouped by head so a head's parts sit together.
        ordered = sorted(
            members[row], key=lambda n: (n.index // d_head, "qkv".find(n.kind), n.index)
        )
        start = LABEL_WIDTH + MARGIN + (widest - len(ordered)) * SPACING / 2
        for i, node in enumerate(ordered):
            positions[node.id] = (start + i * SPACING, y)
    return positions, channels, width, height


def node_label(node: DrawnNode, d_head: int) -> str:
    if node.explanation and len(node.explanation) <= SHORT_EXPLANATION:
        return node.explanation
    if node.kind in RESIDUAL_KINDS:
        return ""
    if node.index < 0:
        return "?"
    if node.kind in ("q", "k", "v"):
        return f"h{node.index // d_head}.{node.kind}{node.index % d_head}"
    return str(node.index)


def drawn_edges(record: dict, positions: dict[str, tuple[float, float]]) -> list[dict]:
    """The edges between drawn nodes, with their ends, colour and thickness."""
    edges = record.get("edges")
    edges = [
        edge
        for edge in (edges if isinstance(edges, list) else [])
        if isinstance(edge, dict)
        and str(edge.get("source")) in positions
        and str(edge.get("target")) in positions
    ]
    weights = [finite(edge.get("weight")) for edge in edges]
    strongest = max([abs(w) for w in weights if w is not None] + [1e-9])
    drawn = []
    for edge, weight in zip(edges, weights, strict=True):
        source, target = str(edge["source"]), str(edge["target"])
        colour = UNKNOWN_COLOUR if weight is None else "#2563eb" if weight > 0 else "#dc2626"
        drawn.append(
            {
                "source": source,
                "target": target,
                "start": positions[source],
                "end": positions[target],
                "weight": edge.get("weight"),
                "colour": colour,
                "thickness": 0.6 + 3.0 * abs(weight or 0.0) / strongest,
            }
        )
    return drawn


def legend_entries(nodes: list[DrawnNode]) -> tuple[list[dict], float]:
    """The node colours' legend entries and where the weight colours' legend starts."""
    entries, x = [], 6.0
    kinds = {node.kind for node in nodes}
    for kind, text in LEGEND + tuple(item for item in OPTIONAL_LEGEND if item[0] in kinds):
        entries.append({"x": x, "colour": COLOURS[kind], "text": text})
        x += 22 + 7 * len(text)
    return entries, x


def circuit_svg(record: dict, activations: dict[str, list[float]] | None = None) -> Markup:
    """The circuit as an SVG element (also a standalone SVG file)."""
    nodes, d_head = drawn_nodes(record), head_width(record)
    positions, channels, width, height = layout(nodes, d_head)
    row_labels = [
        {
            "y": height - MARGIN - position * ROW_HEIGHT,
            "text": ("" if row in UNLAYERED_ROWS else f"L{layer if layer >= 0 else '?'} ")
            + ROW_NAMES.get(row, row.replace("_", " ")),
        }
        for position, (layer, row) in enumerate(used_rows(nodes))
    ]
    legend, weights_legend_x = legend_entries(nodes)
    return render(
        TEMPLATES,
        "circuit.svg",
        width=max(width, weights_legend_x + WEIGHTS_LEGEND_WIDTH),
        height=height + LEGEND_HEIGHT,  # the legend goes below the drawing
        top=MARGIN / 2,
        bottom=height - MARGIN / 2,
        channels=[
            {"x": LABEL_WIDTH + MARGIN + i * SPACING, "label": number(c) if c >= 0 else "?"}
            for i, c in enumerate(channels)
        ],
        edges=drawn_edges(record, positions),
        nodes=nodes,
        positions=positions,
        labels={node.id: node_label(node, d_head) for node in nodes},
        activations=activations or {},
        row_labels=row_labels,
        legend=legend,
        legend_y=height + LEGEND_HEIGHT / 2,
        weights_legend_x=weights_legend_x,
    )


def metric_text(value: object) -> str:
    """A metric as shown in the page: floats to 4 places, dicts as `key value` pairs."""
    if isinstance(value, dict):
        return ", ".join(f"{key} {metric_text(item)}" for key, item in value.items())
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return number(value, 4 if isinstance(value, float) else None)
    return str(value)


def circuit_html(
    record: dict, activations: dict[str, list[float]] | None, prompts: list[str]
) -> Markup:
    """A page with the circuit's metrics, its drawing and the prompts its tooltips show."""
    model = record.get("model") if isinstance(record.get("model"), dict) else {}
    metrics = record.get("metrics") if isinstance(record.get("metrics"), dict) else {}
    edges = record.get("edges")
    return render(
        TEMPLATES,
        "circuit.html",
        task=record.get("task", "?"),
        target_loss=record.get("target_loss"),
        ablation=record.get("ablation", "?"),
        model_path=model.get("path", "?"),
        model_sha256=model.get("sha256", "?"),
        node_count=len(drawn_nodes(record)),
        edge_count=len(edges) if isinstance(edges, list) else 0,
        metrics=[(key, metric_text(value)) for key, value in metrics.items()],
        svg=circuit_svg(record, activations),
        prompts=prompts,
    )


def write_drawing(record: dict, out: Path, run: Run | None, prompts: list[str]) -> Path:
    activations = node_activations(run, record, prompts) if run is not None else None
    text = (
        circuit_svg(record, activations)
        if out.suffix == ".svg"
        else circuit_html(record, activations, prompts if run is not None else [])
    )
    return write_text_atomic(out, text)
