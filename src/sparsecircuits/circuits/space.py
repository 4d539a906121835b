"""The circuit space of one model: its prunable nodes, what a switched-off node becomes, and
the weights that join nodes.

Every stage of pruning speaks in keep-vectors over this space: one bool per node, the node
groups concatenated in data-flow order (nodes.node_groups). `CircuitSpace` owns the arithmetic
from a keep-vector to hooks, answer margins, edges and node ids, so no other module counts
offsets.

Edges (spec section 3) are nonzero weights whose two ends are both kept nodes. Weights join:
norm output channels -> q/k/v channels, value channels -> attention output channels (through the
attention mixing), MLP input channels -> neurons and neurons -> MLP output channels. The
residual stream itself is an identity, not a weight, so it adds no edges (nor do the token
embedding's channels, nodes with `embedding_nodes`).

Three options, off by default, leave the circuit more strictly alone (docs/circuits.md, "The
circuit alone, strictly"): `embedding_nodes` makes the token embedding's channels nodes;
`topk_after_ablation` blends each group in at the hook before its AbsTopK, so the top-k chooses
among the circuit's values and the ablated nodes' means; `frozen_norm_scale` replaces every
RMSNorm's divisor by its mean over pretraining text.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from sparsecircuits.circuits.latents import latent_layers, with_latents
from sparsecircuits.circuits.masks import blend_hook
from sparsecircuits.circuits.nodes import (
    PRE_TOPK_HOOKS,
    NodeGroup,
    embedding_group,
    load_or_compute_means,
    node_groups,
    norm_scale_groups,
    pretraining_means,
)
from sparsecircuits.errors import UserError
from sparsecircuits.loading import Run
from sparsecircuits.model import GPT, GPTConfig
from sparsecircuits.model.hooks import HookFn
from sparsecircuits.tasks import TaskBatch
from sparsecircuits.tasks import answer_margins as task_answer_margins

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


@dataclass(frozen=True)
class Link:
    """One weight matrix between two node groups of a block."""

    source: NodeGroup
    target: NodeGroup
    weight: torch.Tensor  # [target width, source width], on the CPU

    @cached_property
    def nonzero(self) -> torch.Tensor:
        return (self.weight != 0).float()


class CircuitSpace:
    """The nodes of `model`, the values that replace switched-off nodes, and the links.

    `replacements` holds a vector per node group's hook and, with `frozen_norm_scale`, a
    one-wide mean per norm scale hook (nodes.norm_scale_groups); see `replacement_values`.
    """

    def __init__(
        self,
        model: GPT,
        replacements: dict[str, torch.Tensor] | None = None,
        *,
        embedding_nodes: bool = False,
        topk_after_ablation: bool = False,
        frozen_norm_scale: bool = False,
    ) -> None:
        self.model = model
        check_options(model.config, frozen_norm_scale)
        self.options = {
            "embedding_nodes": embedding_nodes,
            "topk_after_ablation": topk_after_ablation,
            "frozen_norm_scale": frozen_norm_scale,
        }
        # A spliced SAE or transcoder's latents replace its layer's neurons (circuits.latents).
        self.latent_layers = latent_layers(model)
        self.groups = with_latents(node_groups(model.config, embedding_nodes), self.latent_layers)
        self.device = next(model.parameters()).device
        # None: a space to read circuits in, not to run them (hooks() needs the values).
        self.replacements = {
            hook: value.to(self.device) for hook, value in (replacements or {}).items()
        }
        # Where each group's values are blended in: its own hook, or the one before its
        # AbsTopK (only where the model has a top-k there; elsewhere the two are the same).
        names = set(model.hook_names)
        self.blend_points = {group.hook: group.hook for group in self.groups}
        for group in self.groups if topk_after_ablation else ():
            if group.kind in PRE_TOPK_HOOKS:
                before = f"blocks.{group.layer}.{PRE_TOPK_HOOKS[group.kind]}"
                self.blend_points[group.hook] = before if before in names else group.hook
        self.frozen_scales = (
            [group.hook for group in norm_scale_groups(model.config)] if frozen_norm_scale else []
        )
        self.by_key = {(group.layer, group.kind): group for group in self.groups}
        self.starts: dict[tuple[int, str], int] = {}
        start = 0
        for group in self.groups:
            self.starts[(group.layer, group.kind)] = start
            start += group.width
        self.size = start
        self.prompts_run = 0  # prompts run forward by margins(): the effort a prune spends
        replaced = {entry.layer for entry in self.latent_layers}
        self.links = [
            Link(
                self.group(layer, source_kind),
                self.group(layer, target_kind),
                block.get_parameter(path).detach().float().cpu(),
            )
            for layer, block in enumerate(model.blocks)
            for source_kind, target_kind, path in WEIGHTED_LINKS
            if not (layer in replaced and "mlp_neuron" in (source_kind, target_kind))
        ]
        for entry in self.latent_layers:
            for source, target, weight in entry.links:
                ends = [
                    self.group(entry.layer, end) if isinstance(end, str) else end
                    for end in (source, target)
                ]
                self.links.append(Link(ends[0], ends[1], weight))

    def group(self, layer: int, kind: str) -> NodeGroup:
        return self.by_key[(layer, kind)]

    def span(self, group: NodeGroup) -> slice:
        start = self.starts[(group.layer, group.kind)]
        return slice(start, start + group.width)

    def position(self, layer: int, kind: str, index: int) -> int:
        """Where node (layer, kind, index) sits in a keep-vector."""
        return self.starts[(layer, kind)] + index

    @cached_property
    def node_ids(self) -> list[str]:
        return [group.node_id(i) for group in self.groups for i in range(group.width)]

    def empty(self) -> torch.Tensor:
        return torch.zeros(self.size, dtype=torch.bool)

    def keep_of(self, nodes: list[tuple[int, str, int]]) -> torch.Tensor:
        """The keep-vector of (layer, kind, index) nodes; KeyError/IndexError if one is not
        a node of this model."""
        keep = self.empty()
        for layer, kind, index in nodes:
            if not 0 <= index < self.group(layer, kind).width:
                raise IndexError(index)
            keep[self.position(layer, kind, index)] = True
        return keep

    def hooks(self, keep: torch.Tensor) -> list[tuple[str, HookFn]]:
        """Hooks that keep the nodes of `keep` and replace every other node."""
        return self.blend_hooks(
            [keep[self.span(group)].float().to(self.device) for group in self.groups]
        )

    def blend_hooks(self, switches: list[torch.Tensor]) -> list[tuple[str, HookFn]]:
        """Hooks keeping each group's nodes where its switch is 1 and replacing them where it
        is 0 (0/1 masks, or training masks carrying gradients), at the space's blend points,
        and, with `frozen_norm_scale`, every norm's scale fixed at its mean."""
        hooks = [
            (
                self.blend_points[group.hook],
                blend_hook(group, switch, self.replacements[group.hook]),
            )
            for group, switch in zip(self.groups, switches, strict=True)
        ]
        frozen = [(hook, constant_hook(self.replacements[hook])) for hook in self.frozen_scales]
        return hooks + frozen

    def margins(
        self,
        batch: TaskBatch,
        keep: torch.Tensor | None = None,
        hooks: list[tuple[str, HookFn]] | None = None,
        chunk: int = 32,
    ) -> torch.Tensor:
        """logit(correct) - logit(wrong) at each prompt's last token, on the CPU: of the full
        model, of the circuit `keep`, or under the given hooks."""
        if hooks is None:
            hooks = [] if keep is None else self.hooks(keep)
        self.prompts_run += batch.tokens.shape[0]
        with self.model.hooks(hooks):
            return task_answer_margins(self.model, batch, chunk).cpu()

    def edges(self, keep: torch.Tensor) -> list[Edge]:
        edges = []
        for link in self.links:
            sources = keep[self.span(link.source)].nonzero().flatten()
            targets = keep[self.span(link.target)].nonzero().flatten()
            if not len(sources) or not len(targets):
                continue
            weight = link.weight[targets][:, sources]
            for row, column in weight.nonzero().tolist():
                edges.append(
                    Edge(
                        link.source.node_id(int(sources[column])),
                        link.target.node_id(int(targets[row])),
                        float(weight[row, column]),
                    )
                )
        return edges

    def count_edges(self, keep: torch.Tensor) -> int:
        kept = keep.float()
        return int(
            sum(
                kept[self.span(link.target)] @ link.nonzero @ kept[self.span(link.source)]
                for link in self.links
            )
        )

    def degrees(self, keep: torch.Tensor) -> torch.Tensor:
        """Number of circuit edges touching each node (zero outside the circuit)."""
        kept = keep.float()
        degrees = torch.zeros(self.size)
        for link in self.links:
            sources, targets = kept[self.span(link.source)], kept[self.span(link.target)]
            degrees[self.span(link.source)] += (targets @ link.nonzero) * sources
            degrees[self.span(link.target)] += (link.nonzero @ sources) * targets
        return degrees.long()


def constant_hook(value: torch.Tensor) -> HookFn:
    """Hook that replaces an activation by `value` (broadcast to its shape)."""

    def apply(x: torch.Tensor, hook: object) -> torch.Tensor:
        return value.to(x.dtype).expand_as(x)

    return apply


def check_options(config: GPTConfig, frozen_norm_scale: bool) -> None:
    if frozen_norm_scale and config.norm != "rms":
        raise UserError(
            "frozen_norm_scale (--strict norm) needs RMSNorm; this model uses LayerNorm"
        )


def replacement_values(
    run: Run,
    ablation: str,
    embedding_nodes: bool = False,
    frozen_norm_scale: bool = False,
    cached: bool = True,
) -> dict[str, torch.Tensor]:
    """What a pruned node is replaced by (its pretraining mean, or zero) and, with
    `frozen_norm_scale`, each norm's mean scale (over pretraining text, whatever the ablation).

    With `cached` the block nodes' means come from the run's folder (computed and saved there
    once); the embedding's and the scales' are measured on the same windows each time and never
    saved, so the shipped files stay as they are. Without it everything is measured afresh (a
    control model's means must not land in the real model's folder).
    """
    if ablation not in ("mean", "zero"):
        raise UserError(f"unknown ablation {ablation!r} (use mean or zero)")
    config = run.model_config
    check_options(config, frozen_norm_scale)
    groups = node_groups(config, embedding_nodes)
    # A spliced SAE's latents and error: means measured each time, never saved with the model.
    latent_groups = [
        group for entry in latent_layers(run.model) for group in (entry.latents, entry.error)
    ]
    scales = norm_scale_groups(config) if frozen_norm_scale else []
    if not cached:
        values = pretraining_means(run, groups=groups + latent_groups + scales)
    else:
        values = load_or_compute_means(run) if ablation == "mean" else {}
        extra = [embedding_group(config)] if embedding_nodes and ablation == "mean" else []
        extra += latent_groups if ablation == "mean" else []
        if extra + scales:
            values |= pretraining_means(run, groups=extra + scales)
    if ablation == "zero":
        values |= {group.hook: torch.zeros(group.hook_width) for group in groups + latent_groups}
    return values


def circuit_space(
    run: Run,
    ablation: str,
    *,
    embedding_nodes: bool = False,
    topk_after_ablation: bool = False,
    frozen_norm_scale: bool = False,
) -> CircuitSpace:
    """The circuit space of `run`'s model, frozen for pruning, with the strictness options
    (all off: the paper's ablation)."""
    model = run.model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    values = replacement_values(run, ablation, embedding_nodes, frozen_norm_scale)
    return CircuitSpace(
        model,
        values,
        embedding_nodes=embedding_nodes,
        topk_after_ablation=topk_after_ablation,
        frozen_norm_scale=frozen_norm_scale,
    )
