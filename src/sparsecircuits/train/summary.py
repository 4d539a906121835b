"""What `sparsecircuits info` reports about a checkpoint: sizes, density, loss."""

from __future__ import annotations

import re

from sparsecircuits.loading.checkpoint import Run

# Parameter name suffix -> the kind of matrix it is, for density per kind.
KINDS = (
    ("wte.weight", "embedding"),
    ("wpe.weight", "positional_embedding"),
    ("q_proj.weight", "attn_q"),
    ("k_proj.weight", "attn_k"),
    ("v_proj.weight", "attn_v"),
    ("out_proj.weight", "attn_out"),
    ("fc.weight", "mlp_in"),
    ("mlp.proj.weight", "mlp_out"),
    ("lm_head.weight", "unembedding"),
    ("bias", "bias"),
)


def matrix_kind(name: str) -> str:
    return next((kind for suffix, kind in KINDS if name.endswith(suffix)), "other")


def summarize_run(run: Run) -> dict:
    """Parameter counts, nonzero counts and densities (overall, per kind, per layer)."""
    model = run.model
    total = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(p.count_nonzero()) for p in model.parameters())
    by_kind: dict[str, list[int]] = {}
    by_layer: dict[str, list[int]] = {}
    sparsified = [0, 0]
    for name, param, _ in model.weight_sparsity_groups():
        counts = (int(param.count_nonzero()), param.numel())
        for table, key in ((by_kind, matrix_kind(name)), (by_layer, layer_of(name))):
            entry = table.setdefault(key, [0, 0])
            entry[0] += counts[0]
            entry[1] += counts[1]
        sparsified[0] += counts[0]
        sparsified[1] += counts[1]
    return {
        "path": str(run.path),
        "total_params": total,
        "nonzero_params": nonzero,
        "sparsified_params": sparsified[1],
        "density": sparsified[0] / sparsified[1],
        "density_by_kind": {k: v[0] / v[1] for k, v in by_kind.items()},
        "density_by_layer": {k: v[0] / v[1] for k, v in by_layer.items()},
        "val_loss": run.state.get("val_loss"),
        "tokens_trained": run.state.get("tokens"),
        "steps": run.state.get("step"),
        "config": run.config,
    }


def layer_of(name: str) -> str:
    match = re.match(r"blocks\.(\d+)\.", name)
    if match:
        return f"layer {match.group(1)}"
    return "unembedding" if name.startswith("lm_head") else "embedding"
