"""The prunable nodes of a GPT and their mean activations over pretraining data.

Nodes (spec section 3): every channel of each norm output (what attention, the MLP and the
unembedding read), every channel each attention and MLP block writes, every MLP neuron and
every q, k and v channel; optionally (`embedding_nodes`) every channel of the token embedding.
Each group of nodes is one hook point; a node is (group, index).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sparsecircuits.errors import UserError
from sparsecircuits.files import atomic_path
from sparsecircuits.loading import Run
from sparsecircuits.loading.activations import iter_activations
from sparsecircuits.model import GPT, GPTConfig
from sparsecircuits.validation import field_error

MEANS_FILE = "mean_activations.safetensors"

# (kind, hook name inside block L) in the order data flows through a block.
BLOCK_NODE_KINDS = (
    ("attn_in", "hook_attn_in"),
    ("q", "attn.hook_q"),
    ("k", "attn.hook_k"),
    ("v", "attn.hook_v"),
    ("attn_out", "hook_attn_out"),
    ("mlp_in", "hook_mlp_in"),
    ("mlp_neuron", "mlp.hook_post"),
    ("mlp_out", "hook_mlp_out"),
)

# The hook before each kind's AbsTopK, inside block L (it exists only where a top-k acts).
PRE_TOPK_HOOKS = {
    "attn_in": "sparsify_attn_in.hook_in",
    "q": "attn.sparsify_q.hook_in",
    "k": "attn.sparsify_k.hook_in",
    "v": "attn.sparsify_v.hook_in",
    "attn_out": "sparsify_attn_out.hook_in",
    "mlp_in": "sparsify_mlp_in.hook_in",
    "mlp_neuron": "mlp.sparsify_neurons.hook_in",
    "mlp_out": "sparsify_mlp_out.hook_in",
}


@dataclass(frozen=True)
class NodeGroup:
    layer: int  # the final norm counts as layer n_layer
    kind: str
    hook: str
    width: int  # nodes
    # Channels of the hook when they are not one node each: a one-node group of a wider hook
    # (an SAE's error term) keeps or replaces the whole vector at once. 0: `width`.
    channels: int = 0

    @property
    def hook_width(self) -> int:
        return self.channels or self.width

    def node_id(self, index: int) -> str:
        return f"{self.layer}.{self.kind}.{index}"


def embedding_group(config: GPTConfig) -> NodeGroup:
    """The token embedding's channels: residual writes before block 0."""
    return NodeGroup(0, "embed", "hook_embed", config.d_model)


def node_groups(config: GPTConfig, embedding_nodes: bool = False) -> list[NodeGroup]:
    groups = [embedding_group(config)] if embedding_nodes else []
    for layer in range(config.n_layer):
        for kind, hook in BLOCK_NODE_KINDS:
            width = config.site_width(kind)
            groups.append(NodeGroup(layer, kind, f"blocks.{layer}.{hook}", width))
    groups.append(NodeGroup(config.n_layer, "final_norm", "hook_final_norm", config.d_model))
    return groups


def norm_scale_groups(config: GPTConfig) -> list[NodeGroup]:
    """Every RMSNorm's scale (its divisor, one value a position) as a one-wide group: not
    nodes, but means of hooks like theirs (`frozen_norm_scale` divides by them)."""
    groups = []
    for layer in range(config.n_layer):
        for norm in ("norm_attn", "norm_mlp"):
            groups.append(NodeGroup(layer, "norm_scale", f"blocks.{layer}.{norm}.hook_scale", 1))
    groups.append(NodeGroup(config.n_layer, "norm_scale", "norm_final.hook_scale", 1))
    return groups


def flat_channels(x: torch.Tensor, group: NodeGroup) -> torch.Tensor:
    """[..., width] view of an activation (q/k/v hooks are [b, p, head, d_head])."""
    return x.flatten(-2) if group.kind in ("q", "k", "v") else x


def mean_activations(
    batches: Iterable[dict[str, torch.Tensor]], groups: list[NodeGroup]
) -> dict[str, torch.Tensor]:
    """Mean of every node's activation over all positions of a stream of cached batches."""
    sums = {group.hook: torch.zeros(group.hook_width, dtype=torch.float64) for group in groups}
    count = 0
    by_hook = {group.hook: group for group in groups}
    for cache in batches:
        for hook in sums:
            value = flat_channels(cache[hook], by_hook[hook]).double()
            sums[hook] += value.sum(dim=(0, 1)).cpu()
        count += value.shape[0] * value.shape[1]
    return {hook: (total / count).float() for hook, total in sums.items()}


@torch.no_grad()
def compute_mean_activations(
    model: GPT, batches: list[torch.Tensor], groups: list[NodeGroup]
) -> dict[str, torch.Tensor]:
    """Mean of every node's activation over all positions of `batches` of token ids."""
    hooks = [group.hook for group in groups]

    def caches() -> Iterator[dict[str, torch.Tensor]]:
        for tokens in batches:
            yield model.run_with_cache(tokens, hooks)[1]

    return mean_activations(caches(), groups)


def load_or_compute_means(
    run: Run, n_sequences: int = 128, batch_size: int = 16, progress: bool = False
) -> dict[str, torch.Tensor]:
    """Mean activations of `run`'s checkpoint, cached beside its weights."""
    groups = node_groups(run.model_config)
    path = run.path / MEANS_FILE
    if path.is_file():
        means = read_means(path, groups)
        if all(group.hook in means for group in groups):
            return means
    means = pretraining_means(run, n_sequences, batch_size, progress)
    spec = run.config.get("train", {}).get("data", "stdlib")
    with atomic_path(path) as temporary:
        save_file(means, temporary, metadata={"sequences": str(n_sequences), "data": spec})
    return means


def pretraining_means(
    run: Run,
    n_sequences: int = 128,
    batch_size: int = 16,
    progress: bool = False,
    groups: list[NodeGroup] | None = None,
) -> dict[str, torch.Tensor]:
    """Mean activations of `groups` (default: the nodes) of `run`'s model over random windows
    of its own training data, the same windows every time (not cached: a control model must not
    leave its means in the real model's folder)."""
    groups = node_groups(run.model_config) if groups is None else groups
    n_tokens = max(1, n_sequences // batch_size) * batch_size * run.model_config.n_ctx
    stream = iter_activations(
        run,
        [group.hook for group in groups],
        n_tokens,
        batch_size,
        split="train",
        order="random",
        seed=1234,
        progress=progress,
    )
    try:
        return mean_activations((batch.activations for batch in stream), groups)
    except UserError as error:
        raise UserError(f"cannot estimate mean activations: {error}") from None


def read_means(path: Path, groups: list[NodeGroup]) -> dict[str, torch.Tensor]:
    """A cached mean-activation file, refused when it cannot be the means of this model.

    A file that lacks some hooks is only incomplete (written before those nodes existed) and is
    computed again; one with hooks this model lacks, or a vector of the wrong width, belongs to
    another model and would silently ablate with the wrong values.
    """
    try:
        means = load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        message = f"corrupt mean-activation file ({error}); delete it to recompute"
        raise field_error(path, "", message) from None
    widths = {group.hook: group.hook_width for group in groups}
    for hook, tensor in means.items():
        if hook not in widths:
            raise field_error(path, hook, "no such hook point in this model (delete the file)")
        if list(tensor.shape) != [widths[hook]] or not tensor.is_floating_point():
            raise field_error(
                path,
                hook,
                f"{tensor.dtype} of shape {list(tensor.shape)}, expected floats of shape "
                f"[{widths[hook]}] (delete the file to recompute it)",
            )
    return means
