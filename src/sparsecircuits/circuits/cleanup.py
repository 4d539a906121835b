"""Remove the nodes of a circuit that cannot change its output, until nothing changes.

A top-k ranking keeps whole prefixes, so a circuit can hold nodes that do nothing under
ablation:
- a q, k, v or MLP output channel none of whose inputs is kept: a linear map of ablated
  inputs is a constant, and with mean ablation that constant is its own mean, the value
  ablation would give it;
- an attention output channel none of whose value channels is kept: a constant too (its mean
  up to the difference between the attention-weighted and the plain mean of v);
- a norm-output read, an MLP neuron or a value channel none of whose outputs is kept: nothing
  in the circuit reads it;
- the q and k channels of a head none of whose value channels is kept: the pattern only mixes
  constants (exact without an attention sink);
- an attention or MLP output channel, or a token embedding channel (`embedding_nodes`), that no
  later kept read takes from the residual stream: it reaches the output only through the norms'
  scale (not even that with `frozen_norm_scale`).
Removing one can strand others, so the rules repeat until the circuit stops changing. Pruning
cleans every circuit before measuring it, so idle nodes never count as nodes or edges. Two rules
are only nearly exact (attention outputs, unread writes); `exact_only` leaves them out, and
pruning measures every cleaned circuit, so what they change shows in its loss. In a model with
AbsTopK no rule is exact (a top-k couples the channels of a site).
"""

from __future__ import annotations

import torch

from sparsecircuits.circuits.space import CircuitSpace

# Kinds that equal their mean when none of their weighted inputs is kept (exactly, then nearly).
MEAN_WITHOUT_INPUTS = ("q", "k", "v", "mlp_out")
NEARLY_MEAN_WITHOUT_INPUTS = ("attn_out",)
# Kinds that only matter through the weighted outputs the circuit keeps.
USELESS_WITHOUT_OUTPUTS = ("attn_in", "mlp_in", "v", "mlp_neuron")


def remove_idle_nodes(
    space: CircuitSpace, keep: torch.Tensor, exact_only: bool = False
) -> torch.Tensor:
    """`keep` without its idle nodes (a new tensor)."""
    keep = keep.clone()
    config = space.model.config
    if exact_only and config.afrac is not None:
        # AbsTopK couples the channels of a site (which survive depends on all of them), so no
        # rule is exact there; the full clean-up still applies, and pruning measures its result.
        return keep
    unfed = MEAN_WITHOUT_INPUTS + (() if exact_only else NEARLY_MEAN_WITHOUT_INPUTS)
    patterns = not exact_only or config.attention_sink is False
    while True:
        before = int(keep.sum())
        drop_unfed_nodes(space, keep, unfed)
        drop_unread_nodes(space, keep)
        if patterns:
            drop_patterns_without_values(space, keep)
        if not exact_only:
            drop_unread_writes(space, keep)
        if int(keep.sum()) == before:
            return keep


def drop_unfed_nodes(space: CircuitSpace, keep: torch.Tensor, kinds: tuple[str, ...]) -> None:
    for link in space.links:
        if link.target.kind in kinds:
            fed = link.nonzero @ keep[space.span(link.source)].float() > 0
            keep[space.span(link.target)] &= fed


def drop_unread_nodes(space: CircuitSpace, keep: torch.Tensor) -> None:
    read: dict[tuple[int, str], torch.Tensor] = {}
    for link in space.links:
        if link.source.kind in USELESS_WITHOUT_OUTPUTS:
            key = (link.source.layer, link.source.kind)
            uses = keep[space.span(link.target)].float() @ link.nonzero > 0
            read[key] = read[key] | uses if key in read else uses
    for (layer, kind), used in read.items():
        keep[space.span(space.group(layer, kind))] &= used


def drop_patterns_without_values(space: CircuitSpace, keep: torch.Tensor) -> None:
    config = space.model.config
    for layer in range(config.n_layer):
        heads = keep[space.span(space.group(layer, "v"))].view(config.n_head, config.d_head)
        has_value = heads.any(dim=1, keepdim=True)
        for kind in ("q", "k"):
            channels = keep[space.span(space.group(layer, kind))].view(config.n_head, -1)
            channels &= has_value


def drop_unread_writes(space: CircuitSpace, keep: torch.Tensor) -> None:
    """Walk the residual stream backwards, keeping writes to channels a later read takes."""
    n_layer = space.model.config.n_layer
    read_later = keep[space.span(space.group(n_layer, "final_norm"))].clone()
    for layer in reversed(range(n_layer)):
        for write, read in (("mlp_out", "mlp_in"), ("attn_out", "attn_in")):
            keep[space.span(space.group(layer, write))] &= read_later
            read_later |= keep[space.span(space.group(layer, read))]
    if (0, "embed") in space.by_key:  # the embedding writes the stream before every read
        keep[space.span(space.group(0, "embed"))] &= read_later
