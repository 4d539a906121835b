"""From a trained run and a task to a verified circuit: prune, sweep, check, measure.

`prune_to_target_loss` runs a small automatic sweep over mask-training settings, keeps the
smallest circuit that meets the target on held-out pairs, then measures it on the test pairs:
sufficiency (everything outside the circuit ablated), necessity (only the circuit ablated) and
a control (a random circuit of the same size).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import torch

from sparsecircuits.circuits.edges import count_edges
from sparsecircuits.circuits.masks import fixed_mask_hooks
from sparsecircuits.circuits.nodes import NodeGroup, load_or_compute_means, node_groups
from sparsecircuits.circuits.prune import (
    Calibration,
    CircuitSearch,
    PruneConfig,
    answer_margins,
    fit_calibration,
    margin_loss,
    smallest_circuit_meeting_target,
    train_node_masks,
)
from sparsecircuits.errors import UserError
from sparsecircuits.tasks import TaskBatch
from sparsecircuits.train import Run

# Mask-training settings the sweep tries, in order; each overrides PruneConfig fields.
DEFAULT_SWEEP = (
    {"k_coef": 1e-3, "lr": 3e-2},
    {"k_coef": 3e-3, "lr": 3e-2},
    {"k_coef": 3e-4, "lr": 3e-2},
    {"k_coef": 1e-2, "lr": 3e-2},
)


@dataclass
class PruneOutcome:
    task: str
    groups: list[NodeGroup]
    keep: torch.Tensor
    scores: torch.Tensor
    replacements: dict[str, torch.Tensor]
    calibration: Calibration
    config: PruneConfig
    metrics: dict
    sweep: list[dict] = field(default_factory=list)


def replacement_values(run: Run, ablation: str) -> dict[str, torch.Tensor]:
    """What a pruned node is replaced by: its pretraining mean, or zero."""
    groups = node_groups(run.model_config)
    if ablation == "zero":
        return {group.hook: torch.zeros(group.width) for group in groups}
    if ablation != "mean":
        raise UserError(f"unknown ablation {ablation!r} (use mean or zero)")
    return load_or_compute_means(run)


def calibrated_loss(
    run: Run,
    groups: list[NodeGroup],
    keep: torch.Tensor,
    replacements: dict,
    heldout: TaskBatch,
    test: TaskBatch,
) -> float:
    """Test loss of the circuit `keep`, calibrated on held-out pairs (as the circuit is)."""
    hooks = fixed_mask_hooks(groups, keep, replacements)
    calibration = fit_calibration(answer_margins(run.model, heldout, hooks), heldout)
    margin = answer_margins(run.model, test, hooks)
    return float(margin_loss(calibration.apply(margin, test)).mean())


@torch.no_grad()
def measure_circuit(
    run: Run,
    groups: list[NodeGroup],
    keep: torch.Tensor,
    replacements: dict,
    calibration: Calibration,
    heldout: TaskBatch,
    test: TaskBatch,
    seed: int = 0,
) -> dict:
    """Sufficiency, necessity and the random control of a circuit, on the test pairs."""
    margin = answer_margins(run.model, test, fixed_mask_hooks(groups, keep, replacements))
    full_margin = answer_margins(run.model, test)
    generator = torch.Generator().manual_seed(seed)
    random_keep = torch.zeros_like(keep)
    random_keep[torch.randperm(keep.numel(), generator=generator)[: int(keep.sum())]] = True
    return {
        "nodes": int(keep.sum()),
        "edges": count_edges(run.model, groups, keep),
        "circuit_loss": float(margin_loss(calibration.apply(margin, test)).mean()),
        "circuit_accuracy": float((calibration.apply(margin, test) > 0).float().mean()),
        "full_model_loss": float(margin_loss(full_margin).mean()),
        "full_model_accuracy": float((full_margin > 0).float().mean()),
        "ablated_circuit_loss": calibrated_loss(run, groups, ~keep, replacements, heldout, test),
        "random_circuit_loss": calibrated_loss(
            run, groups, random_keep, replacements, heldout, test
        ),
        "test_pairs": test.n_pairs,
    }


def prune_to_target_loss(
    run: Run,
    task: str,
    train: TaskBatch,
    heldout: TaskBatch,
    test: TaskBatch,
    config: PruneConfig,
    sweep: tuple[dict, ...] = DEFAULT_SWEEP,
    time_budget: float = 170.0,
    log=print,
) -> PruneOutcome:
    """The smallest circuit of `task` meeting `config.target_loss` over a short sweep.

    Raises UserError when no setting reaches the target (saying the best loss reached).
    """
    started = time.perf_counter()
    model = run.model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    groups = node_groups(run.model_config)
    replacements = replacement_values(run, config.ablation)
    full = float(margin_loss(answer_margins(model, heldout)).mean())
    log(
        f"{task}: full model held-out task loss {full:.4f} "
        f"(target {config.target_loss}), {sum(g.width for g in groups):,} nodes"
    )

    best: tuple[CircuitSearch, torch.Tensor, PruneConfig] | None = None
    closest = float("inf")
    history = []
    longest = 0.0  # the slowest setting so far predicts the next one
    for index, overrides in enumerate(sweep):
        if index and time.perf_counter() - started + longest > time_budget:
            log(f"  sweep stopped after {index} settings: the next would pass {time_budget:.0f} s")
            break
        setting = replace(config, **overrides)
        setting_started = time.perf_counter()
        masks, _ = train_node_masks(model, groups, replacements, train, setting)
        scores = masks.scores()
        trained = time.perf_counter()
        search = smallest_circuit_meeting_target(
            model, groups, replacements, scores, heldout, config.target_loss
        )
        searched = time.perf_counter()
        longest = max(longest, searched - setting_started)
        met = search.loss <= config.target_loss
        size = int(search.keep.sum())
        history.append(
            {
                **overrides,
                "nodes": size,
                "heldout_loss": search.loss,
                "met": met,
                "active_after_training": int((scores > 0).sum()),
                "mask_training_seconds": trained - setting_started,
                "search_seconds": searched - trained,
            }
        )
        log(
            f"  sweep {index + 1}/{len(sweep)} {overrides}: {size} nodes, held-out loss "
            f"{search.loss:.4f}{'' if met else ' (target not met)'} "
            f"[masks {trained - setting_started:.0f} s, search {searched - trained:.0f} s "
            f"over {len(search.tried)} k]"
        )
        closest = min(closest, search.loss)
        if met and (best is None or size < int(best[0].keep.sum())):
            best = (search, scores, setting)
    if best is None:
        raise UserError(
            f"no circuit of {task} reached target loss {config.target_loss}: best held-out loss "
            f"{closest:.4f} (full model {full:.4f}); try a higher --target-loss"
        )
    search, scores, setting = best
    metrics = measure_circuit(
        run, groups, search.keep, replacements, search.calibration, heldout, test, seed=config.seed
    )
    metrics["seconds"] = time.perf_counter() - started
    return PruneOutcome(
        task,
        groups,
        search.keep,
        scores,
        replacements,
        search.calibration,
        setting,
        metrics,
        history,
    )
