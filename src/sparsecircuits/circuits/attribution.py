"""Edge attribution patching (EAP): a cheap circuit-discovery baseline beside pruning.

Every edge of the circuit space (a nonzero weight between two nodes) gets a first-order
score: how much the task loss would change if the edge carried its source node's ablated
value (the same mean or zero the pruner uses) instead of the real one,
    score(i -> j) = W[j, i] * sum over prompts and positions of d loss / d target_j * delta_i,
with delta = ablated - actual source activation (for value -> attention-output edges the
value change is first mixed by the clean attention pattern). Final-norm channels reach the
logits through the unembedding, not through an edge of the space; each gets its node
attribution as the score of a pseudo-edge to the output (and so does each token embedding
channel, a node with `embedding_nodes`, which reaches its reads through the residual stream).
All scores come from one forward and one backward pass. The circuit of the top-k edges keeps
their endpoints; k is searched for the smallest circuit that reaches the target loss, measured
exactly as the pruner's circuits are; `eap_outcome` then gives it the pruner's clean-up,
trimming and verification (or not: raw).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sparsecircuits.circuits.checks import circuit_checks
from sparsecircuits.circuits.config import PruneConfig
from sparsecircuits.circuits.nodes import NodeGroup
from sparsecircuits.circuits.pipeline import (
    PruneOutcome,
    measure_circuit,
    trim_and_verify,
    trim_summary,
)
from sparsecircuits.circuits.prune import (
    MaskTraining,
    calibrated_loss,
    fit_calibration,
    margin_loss,
    measure_cleaned,
)
from sparsecircuits.circuits.space import CircuitSpace, circuit_space
from sparsecircuits.circuits.task_data import TaskSplits
from sparsecircuits.errors import UserError
from sparsecircuits.loading import Run
from sparsecircuits.tasks import TaskBatch

# The hook whose gradient stands for each link's target input: the MLP's weights act before
# its activation function, so its neurons are scored at their pre-activation.
TARGET_INPUT_HOOK = {"mlp_neuron": "mlp.hook_pre"}


@dataclass
class EdgeScores:
    """One score per edge candidate, aligned with (link index, target index, source index);
    a negative link index marks a node's pseudo-edge (`pseudo_edge_groups`)."""

    scores: torch.Tensor  # [n]
    link: torch.Tensor  # [n]
    target: torch.Tensor  # [n]
    source: torch.Tensor  # [n]


def pseudo_edge_groups(space: CircuitSpace) -> dict[int, NodeGroup]:
    """Node groups joined to the rest by no weight, by the negative link index of their
    pseudo-edges: -1 the final norm's channels, -2 the token embedding's (if nodes)."""
    groups = {-1: space.groups[-1]}
    if space.groups[0].kind == "embed":
        groups[-2] = space.groups[0]
    return groups


def flat_channels(x: torch.Tensor) -> torch.Tensor:
    """[b, p, channels]: q/k/v hooks hold [b, p, head, d_head]."""
    return x.flatten(2) if x.dim() == 4 else x


def edge_scores(space: CircuitSpace, batch: TaskBatch) -> EdgeScores:
    """EAP scores of every edge of `space` on the task pairs `batch` (1 forward, 1 backward)."""
    model, config = space.model, space.model.config
    batch = batch.trimmed().to(space.device)
    hooks = {group.hook for group in space.groups}
    for layer in range(config.n_layer):
        hooks |= {f"blocks.{layer}.mlp.hook_pre", f"blocks.{layer}.attn.hook_pattern"}
    # The pruner freezes the weights: the graph starts at the embeddings instead.
    from_embeddings = {"hook_embed": lambda x, hook: x.detach().requires_grad_(True)}
    with (
        torch.enable_grad(),
        model.edit(from_embeddings),
        model.cache(sorted(hooks), detach=False) as cache,
    ):
        logits = model(batch.tokens, logits_at=batch.last)
        rows = torch.arange(logits.shape[0], device=logits.device)
        margin = logits[rows, batch.correct] - logits[rows, batch.wrong]
        loss = margin_loss(margin.float()).mean()
        names = sorted(hooks)
        gradients = dict(
            zip(names, torch.autograd.grad(loss, [cache[n] for n in names]), strict=True)
        )
    parts = []
    for index, link in enumerate(space.links):
        layer = link.source.layer
        source = flat_channels(cache[link.source.hook].detach())
        delta = space.replacements[link.source.hook].to(source.dtype) - source
        if link.target.kind == "attn_out":  # values reach the output mixed by the pattern
            delta = mixed_by_pattern(delta, cache[f"blocks.{layer}.attn.hook_pattern"].detach())
        target_hook = link.target.hook
        if link.target.kind in TARGET_INPUT_HOOK:
            target_hook = f"blocks.{layer}.{TARGET_INPUT_HOOK[link.target.kind]}"
        gradient = flat_channels(gradients[target_hook])
        weight = link.weight.to(space.device)
        score = weight * torch.einsum("bpt,bps->ts", gradient.float(), delta.float())
        target, source_index = (weight != 0).nonzero(as_tuple=True)
        parts.append((score[target, source_index], index, target, source_index))
    for index, group in pseudo_edge_groups(space).items():  # node attributions
        value = cache[group.hook].detach()
        delta = space.replacements[group.hook].to(value.dtype) - value
        attribution = (gradients[group.hook] * delta).flatten(0, -2).sum(dim=0)
        channels = torch.arange(group.width, device=space.device)
        parts.append((attribution, index, channels, channels))
    return EdgeScores(
        scores=torch.cat([p[0].detach().cpu() for p in parts]),
        link=torch.cat([torch.full((len(p[2]),), p[1]) for p in parts]),
        target=torch.cat([p[2].cpu() for p in parts]),
        source=torch.cat([p[3].cpu() for p in parts]),
    )


def mixed_by_pattern(values: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """[b, p, h * e] values after attention mixing with `pattern` [b, h, query, key]."""
    batch, n_pos, width = values.shape
    n_head = pattern.shape[1]
    heads = values.view(batch, n_pos, n_head, width // n_head).transpose(1, 2)
    return (pattern @ heads).transpose(1, 2).reshape(batch, n_pos, width)


def top_edges_circuit(space: CircuitSpace, edges: EdgeScores, k: int) -> torch.Tensor:
    """The keep-vector of the endpoints of the k edges of largest |score|."""
    order = edges.scores.abs().argsort(descending=True)[:k]
    keep = space.empty()
    pseudo = pseudo_edge_groups(space)
    for position in order.tolist():
        link = int(edges.link[position])
        target, source = int(edges.target[position]), int(edges.source[position])
        if link < 0:
            group = pseudo[link]
            keep[space.position(group.layer, group.kind, target)] = True
            continue
        link_of = space.links[link]
        keep[space.position(link_of.target.layer, link_of.target.kind, target)] = True
        keep[space.position(link_of.source.layer, link_of.source.kind, source)] = True
    return keep


@dataclass
class EAPCircuit:
    keep: torch.Tensor
    k: int  # edges chosen by score
    nodes: int
    edges: int  # counted as the pruner counts them: nonzero weights between kept nodes
    select_loss: float
    test_loss: float
    seconds: float
    scores: EdgeScores  # every edge's score, the chosen ones and the rest


def eap_circuit(space: CircuitSpace, splits: TaskSplits, target_loss: float) -> EAPCircuit:
    """The smallest top-k-edges circuit whose calibrated loss on the selection pairs reaches
    `target_loss`: scores from the mask-training pairs, k searched on the selection pairs
    (doubling, then bisection), the loss reported on the test pairs."""
    started = time.perf_counter()
    edges = edge_scores(space, splits.train)

    def loss_of(k: int) -> float:
        keep = top_edges_circuit(space, edges, k)
        return calibrated_loss(space, keep, splits.select, splits.select)

    total = len(edges.scores)
    high = 1
    while loss_of(high) > target_loss:
        if high >= total:
            raise UserError(f"even all {total:,} edges miss the target loss {target_loss}")
        high = min(total, 2 * high)
    low = high // 2  # misses the target (or is 0)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if loss_of(middle) <= target_loss else (middle, high)
    keep = top_edges_circuit(space, edges, high)
    return EAPCircuit(
        keep=keep,
        k=high,
        nodes=int(keep.sum()),
        edges=space.count_edges(keep),
        select_loss=loss_of(high),
        test_loss=calibrated_loss(space, keep, splits.select, splits.test),
        seconds=time.perf_counter() - started,
        scores=edges,
    )


def node_scores(space: CircuitSpace, edges: EdgeScores) -> torch.Tensor:
    """Each node's summed |score| over the edges touching it (its "score" in a circuit file)."""
    scores = torch.zeros(space.size)
    magnitude = edges.scores.abs()
    pseudo = pseudo_edge_groups(space)
    for index in [*sorted(pseudo, reverse=True), *range(len(space.links))]:
        chosen = edges.link == index
        if index < 0:
            group = pseudo[index]
            start = space.position(group.layer, group.kind, 0)
            scores.index_add_(0, start + edges.target[chosen], magnitude[chosen])
            continue
        link = space.links[index]
        target_start = space.position(link.target.layer, link.target.kind, 0)
        source_start = space.position(link.source.layer, link.source.kind, 0)
        scores.index_add_(0, target_start + edges.target[chosen], magnitude[chosen])
        scores.index_add_(0, source_start + edges.source[chosen], magnitude[chosen])
    return scores


def eap_outcome(
    run: Run,
    splits: TaskSplits,
    config: PruneConfig,
    post_process: bool = True,
    log: Callable[[str], None] = print,
) -> PruneOutcome:
    """EAP's circuit for a task, measured and recorded exactly as `prune_to_target_loss`'s
    (sufficiency, necessity, random control, other ablation, agreement), so it can be written
    as a circuit file, drawn and compared. With `post_process`, the top-k circuit first gets
    what every pruned circuit gets (clean-up of idle nodes, trimming node by node with the
    nodes' EAP scores as the order, verification on other pairs): comparing raw EAP with
    post-processed pruning would measure the post-processing. `metrics["eap"]` keeps the raw
    circuit's size and losses either way.
    """
    started = time.perf_counter()
    space = circuit_space(run, config.ablation, **config.strict_options())
    forwards_before = space.prompts_run
    found = eap_circuit(space, splits, config.target_loss)
    scores = node_scores(space, found.scores)
    log(
        f"{splits.name}: EAP's top {found.k:,} edges: {found.nodes} nodes, {found.edges:,} "
        f"edges, selection loss {found.select_loss:.4f}"
    )
    keep = found.keep
    calibration = fit_calibration(space.margins(splits.select, keep), splits.select)
    processed = {}
    if post_process:
        full = float(margin_loss(space.margins(splits.select)).mean())
        cleaned = measure_cleaned(space, keep, splits.select, config.clean_up)
        ranking = torch.argsort(scores, descending=True, stable=True)
        ranked = MaskTraining(ranking, scores, scores, [])
        trimmed, verified = trim_and_verify(space, cleaned, ranked, splits, config, full, log=log)
        keep, calibration = verified.keep, verified.calibration
        processed = {"trim": trim_summary(trimmed), "verification": verified.summary}
    metrics = measure_circuit(space, keep, calibration, splits, config)
    metrics |= circuit_checks(run, space, config.ablation, keep, splits)
    seconds = time.perf_counter() - started
    metrics |= processed | {
        "method": "eap",
        "post_processed": post_process,
        "eap": {
            "top_edges": found.k,
            "nodes": found.nodes,
            "edges": found.edges,
            "selection_loss": found.select_loss,
            "test_loss": found.test_loss,
        },
        "seconds": seconds,
        "effort": {
            "settings": 0,
            "mask_steps": 0,
            "prompts_run": space.prompts_run - forwards_before,
            "seconds": seconds,
        },
    }
    return PruneOutcome(splits.name, space, keep, scores, calibration, config, metrics)
