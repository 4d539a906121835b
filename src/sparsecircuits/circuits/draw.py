"""Draw a circuit as SVG (standalone, or inside an HTML page).

The look of the paper's figures: residual channels are vertical lines; each layer reads them
(attention / MLP input nodes), computes (q/k/v channels grouped by head, MLP neurons) and
writes them back (attention / MLP output nodes). Edges are the circuit's nonzero weights,
blue for positive, red for negative, thicker for larger |weight|. Hovering a node shows its id,
its mean (the value it is replaced by when pruned) and its activations on a few task prompts.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

import torch

from sparsecircuits.circuits.nodes import flat_channels, node_groups
from sparsecircuits.files import write_text_atomic
from sparsecircuits.train import Run

RESIDUAL_KINDS = ("attn_in", "attn_out", "mlp_in", "mlp_out", "final_norm")
ROW_KINDS = ("attn_in", "qkv", "attn_out", "mlp_in", "mlp_neuron", "mlp_out")
COLOURS = {
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
SPACING, ROW_HEIGHT, MARGIN = 34, 58, 40
LABEL_WIDTH, LEGEND_HEIGHT, LEGEND_WIDTH = 96, 30, 780


@torch.no_grad()
def node_activations(run: Run, record: dict, prompts: list[str]) -> dict[str, list[float]]:
    """Each circuit node's activation at the last token of each prompt."""
    groups = {(g.layer, g.kind): g for g in node_groups(run.model_config)}
    wanted = {(n["layer"], n["kind"]) for n in record["nodes"]}
    values: dict[str, list[float]] = {n["id"]: [] for n in record["nodes"]}
    for prompt in prompts:
        ids = run.tokenizer.encode(prompt)[-run.model_config.n_ctx :]
        with run.model.cache([groups[key].hook for key in wanted]) as cache:
            run.model(torch.tensor([ids]))
        for node in record["nodes"]:
            group = groups[(node["layer"], node["kind"])]
            value = flat_channels(cache[group.hook], group)[0, -1, node["index"]]
            values[node["id"]].append(float(value))
    return values


def row_of(node: dict) -> str:
    return "qkv" if node["kind"] in ("q", "k", "v") else node["kind"]


def used_rows(record: dict) -> list[tuple[int, str]]:
    """(layer, row) pairs that hold a node, bottom (embedding side) to top (unembedding)."""
    order = {row: i for i, row in enumerate((*ROW_KINDS, "final_norm"))}
    rows = {(n["layer"], row_of(n)) for n in record["nodes"]}
    return sorted(rows, key=lambda key: (key[0], order[key[1]]))


def layout(record: dict) -> tuple[dict[str, tuple[float, float]], list[int], float, float]:
    """Positions of every node, the residual channels drawn, and the canvas size.

    Only rows holding a node are drawn, so a circuit spread over a deep model stays compact.
    """
    channels = sorted({n["index"] for n in record["nodes"] if n["kind"] in RESIDUAL_KINDS})
    x_of_channel = {c: LABEL_WIDTH + MARGIN + i * SPACING for i, c in enumerate(channels)}
    rows = used_rows(record)
    members: dict[tuple[int, str], list[dict]] = {row: [] for row in rows}
    for node in record["nodes"]:
        members[(node["layer"], row_of(node))].append(node)
    widest = max([len(channels)] + [len(m) for m in members.values()] + [4])
    width = max(LABEL_WIDTH + 2 * MARGIN + (widest - 1) * SPACING, LEGEND_WIDTH)
    height = 2 * MARGIN + max(len(rows) - 1, 0) * ROW_HEIGHT
    d_head = record["model"].get("d_head", 16)
    positions = {}
    for position, row in enumerate(rows):
        y = height - MARGIN - position * ROW_HEIGHT
        if row[1] in RESIDUAL_KINDS:
            for node in members[row]:
                positions[node["id"]] = (x_of_channel[node["index"]], y)
            continue
        # q/k/v channels are grouped by head so a head's parts sit together.
        ordered = sorted(
            members[row], key=lambda n: (n["index"] // d_head, "qkv".find(n["kind"]), n["index"])
        )
        start = LABEL_WIDTH + MARGIN + (widest - len(ordered)) * SPACING / 2
        for i, node in enumerate(ordered):
            positions[node["id"]] = (start + i * SPACING, y)
    return positions, channels, width, height


def node_label(node: dict, d_head: int) -> str:
    if node["kind"] in RESIDUAL_KINDS:
        return ""
    if node["kind"] in ("q", "k", "v"):
        return f"h{node['index'] // d_head}.{node['kind']}{node['index'] % d_head}"
    return str(node["index"])


def circuit_svg(record: dict, activations: dict[str, list[float]] | None = None) -> str:
    positions, channels, width, height = layout(record)
    height += LEGEND_HEIGHT
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="11">'
    ]
    top, bottom = MARGIN / 2, height - LEGEND_HEIGHT - MARGIN / 2
    for channel in channels:
        x = LABEL_WIDTH + MARGIN + channels.index(channel) * SPACING
        parts.append(
            f'<line x1="{x}" y1="{top}" x2="{x}" y2="{bottom}" stroke="#d1d5db" '
            f'stroke-width="3"><title>residual channel {channel}</title></line>'
        )
        parts.append(
            f'<text x="{x}" y="{bottom + 14}" text-anchor="middle" fill="#6b7280">{channel}</text>'
        )
    strongest = max([abs(e["weight"]) for e in record["edges"]] + [1e-9])
    for edge in record["edges"]:
        (x1, y1), (x2, y2) = positions[edge["source"]], positions[edge["target"]]
        colour = "#2563eb" if edge["weight"] > 0 else "#dc2626"
        thickness = 0.6 + 3.0 * abs(edge["weight"]) / strongest
        parts.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
            f'stroke="{colour}" stroke-opacity="0.75" stroke-width="{thickness:.2f}">'
            f"<title>{escape(edge['source'])} → {escape(edge['target'])}: "
            f"{edge['weight']:+.4f}</title></line>"
        )
    d_head = record["model"].get("d_head", 16)
    for node in record["nodes"]:
        x, y = positions[node["id"]]
        tip = [
            f"{node['id']} ({node['kind']})",
            f"mean {node['mean']:+.4f}",
            f"mask score {node['score']:+.3f}",
        ]
        if activations and node["id"] in activations:
            tip.append(
                "on task prompts: " + ", ".join(f"{v:+.3f}" for v in activations[node["id"]])
            )
        parts.append(
            f'<g class="node" data-id="{escape(node["id"])}">'
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="7" fill="{COLOURS[node["kind"]]}" '
            f'stroke="white" stroke-width="1.5"><title>{escape(chr(10).join(tip))}'
            f"</title></circle>"
            f'<text x="{x + 4:.1f}" y="{y - 9:.1f}" fill="#374151" '
            f'transform="rotate(-35 {x + 4:.1f} {y - 9:.1f})">'
            f"{escape(node_label(node, d_head))}</text></g>"
        )
    parts.append(row_labels(record, height - LEGEND_HEIGHT))
    parts.append(legend(height))
    parts.append("</svg>")
    return "\n".join(parts)


ROW_NAMES = {"qkv": "attn q k v", "mlp_neuron": "mlp neurons", "final_norm": "unembed"}


def row_labels(record: dict, height: float) -> str:
    labels = []
    for position, (layer, row) in enumerate(used_rows(record)):
        y = height - MARGIN - position * ROW_HEIGHT
        name = ROW_NAMES.get(row, row.replace("_", " "))
        prefix = "" if row == "final_norm" else f"L{layer} "
        labels.append(f'<text x="6" y="{y + 4:.1f}" fill="#6b7280">{prefix}{name}</text>')
    return "\n".join(labels)


def legend(height: float) -> str:
    entries = [("q", "query"), ("k", "key"), ("v", "value"), ("mlp_neuron", "MLP neuron")]
    entries += [("attn_in", "residual read"), ("attn_out", "residual write")]
    parts, x = [], 6.0
    y = height - LEGEND_HEIGHT / 2
    for kind, text in entries:
        parts.append(f'<circle cx="{x + 6}" cy="{y}" r="6" fill="{COLOURS[kind]}"/>')
        parts.append(f'<text x="{x + 16}" y="{y + 4}" fill="#374151">{text}</text>')
        x += 22 + 7 * len(text)
    parts.append(f'<text x="{x + 10}" y="{y + 4}" fill="#2563eb">— positive weight</text>')
    parts.append(f'<text x="{x + 130}" y="{y + 4}" fill="#dc2626">— negative weight</text>')
    return "\n".join(parts)


def metric_text(value: object) -> str:
    """A metric as shown in the page: floats to 4 places, dicts as `key value` pairs."""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{key} {metric_text(item)}" for key, item in value.items())
    return str(value)


def circuit_html(
    record: dict, activations: dict[str, list[float]] | None, prompts: list[str]
) -> str:
    metrics = record.get("metrics", {})
    rows = "".join(
        f"<tr><td>{escape(str(key))}</td><td>{escape(metric_text(value))}</td></tr>"
        for key, value in metrics.items()
    )
    prompt_list = "".join(f"<li><pre>{escape(p)}</pre></li>" for p in prompts)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>circuit: {escape(record["task"])}</title>
<style>body{{font:14px/1.5 system-ui,sans-serif;margin:2em;color:#222}}
table{{border-collapse:collapse}}td{{padding:1px 14px 1px 0}}
pre{{margin:0;background:#f6f8fa;padding:4px 6px}}
.node:hover circle{{stroke:#111;stroke-width:3}}</style></head>
<body>
<h1>Circuit for <code>{escape(record["task"])}</code></h1>
<p>{len(record["nodes"])} nodes, {len(record["edges"])} edges; target loss
{record["target_loss"]}, {escape(record["ablation"])} ablation; model
<code>{escape(record["model"]["path"])}</code> (sha256 {escape(record["model"]["sha256"])}).
Hover a node for its activations on the prompts listed below (last token).</p>
<table>{rows}</table>
{circuit_svg(record, activations)}
<h2>Prompts</h2><ol>{prompt_list}</ol>
</body></html>
"""


def write_drawing(record: dict, out: Path, run: Run | None, prompts: list[str]) -> Path:
    activations = node_activations(run, record, prompts) if run is not None else None
    text = (
        circuit_svg(record, activations)
        if out.suffix == ".svg"
        else circuit_html(record, activations, prompts if run is not None else [])
    )
    return write_text_atomic(out, text)
