"""Weight sparsity: after every optimizer step keep only the largest-magnitude weights.

Spec section 2: every sparsified tensor keeps the same fraction of entries (top |w|), and no
neuron or attention channel ever drops below `min_per_neuron` weights.
"""

from __future__ import annotations

import torch
from torch import nn

from sparsecircuits.model import GPT


def kept_count(numel: int, density: float) -> int:
    """Entries a tensor of `numel` keeps at `density` (at least one)."""
    return max(1, min(numel, round(density * numel)))


def topk_mask(
    weight: torch.Tensor, density: float, rule: str | None, min_per_neuron: int = 4
) -> torch.Tensor:
    """Boolean mask of the entries to keep: exactly kept_count entries, unless the
    per-neuron minimum alone needs more."""
    scores = weight.detach().abs()
    n_protected = 0
    if rule is not None:
        # Protect each neuron's strongest connections by giving them an infinite score.
        axis = 1 if rule == "rows" else 0
        per_neuron = min(min_per_neuron, weight.shape[axis])
        protected = scores.topk(per_neuron, dim=axis).indices
        scores = scores.scatter(axis, protected, float("inf"))
        # Counted from the shape, not the tensor: reading a count back would stall a GPU
        # once per tensor per step.
        n_protected = per_neuron * weight.shape[1 - axis]
    flat = scores.flatten()
    n_keep = max(kept_count(flat.numel(), density), n_protected)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[flat.topk(n_keep, sorted=False).indices] = True
    return mask.view_as(weight)


def is_embedding_or_bias(name: str) -> bool:
    """The tensors outside the blocks' weight matrices: token and position embeddings, the
    unembedding and every bias. Circuit edges never run through them, so they may keep a larger
    fraction (spec section 2) without making circuits any larger."""
    return name.endswith("bias") or name.startswith(("wte.", "wpe.", "lm_head."))


@torch.no_grad()
def project_to_density(
    model: GPT, density: float, min_per_neuron: int = 4, embedding_density: float | None = None
) -> None:
    """Zero all but the top-|w| `density` fraction of every sparsified tensor, in place;
    embeddings, unembedding and biases keep `embedding_density` instead, when it is given."""
    for name, param, rule in model.weight_sparsity_groups():
        kept = density
        if embedding_density is not None and is_embedding_or_bias(name):
            kept = embedding_density
        if kept < 1.0:
            param.mul_(topk_mask(param, kept, rule, min_per_neuron))


def density_report(model: nn.Module | GPT) -> dict[str, dict[str, int]]:
    """Nonzero and total entries of each sparsified tensor, by parameter name."""
    return {
        name: {"nonzero": int(param.count_nonzero()), "total": param.numel()}
        for name, param, _ in model.weight_sparsity_groups()
    }
