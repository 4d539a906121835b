"""Controls that tell a real circuit from what pruning finds anywhere.

A 2026 study ("Weight-sparse circuits may be interpretable yet unfaithful") found that learned
pruning also reaches low task loss on nonsense tasks and in random-weight models. So we run the
same recipe where no real circuit can exist:
- random weights: the same architecture with each weight tensor's entries permuted (the same
  values and the same fraction of zeros, no learned structure), its means measured afresh;
- nonsense task: the task's pairs with the two answers swapped in a random half of the pairs
  (fixed seed), so the answer no longer follows from the prompt;
- the other ablation: zero instead of mean (or the reverse), as the study compares them.
A real circuit meets the target and verifies on fresh pairs; the first two should not (the
verification pairs are the guard), and where one does, the report says so. Cheaper checks of a
found circuit itself come with every prune and `circuit eval` (circuits.checks).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace

import torch

from sparsecircuits.circuits.checks import OTHER_ABLATION, nonsense_batch
from sparsecircuits.circuits.nodes import pretraining_means
from sparsecircuits.circuits.pipeline import prune_to_target_loss
from sparsecircuits.circuits.prune import PruneConfig
from sparsecircuits.circuits.space import CircuitSpace
from sparsecircuits.circuits.task_data import TaskSplits
from sparsecircuits.errors import UserError
from sparsecircuits.loading import Run


def permuted_run(run: Run, seed: int = 0) -> Run:
    """`run` with each parameter tensor's entries shuffled (the model is copied)."""
    model = copy.deepcopy(run.model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            order = torch.randperm(param.numel(), generator=generator).to(param.device)
            param.copy_(param.flatten()[order].view_as(param))
    return replace(run, model=model)


def nonsense_splits(splits: TaskSplits, seed: int = 0) -> TaskSplits:
    parts = [nonsense_batch(batch, seed + i) for i, batch in enumerate(splits.batches())]
    return TaskSplits(f"{splits.name} (nonsense answers)", *parts)


def pruned_controls(
    run: Run,
    splits: TaskSplits,
    config: PruneConfig,
    settings: int,
    log: Callable[[str], None] = print,
) -> dict:
    """The same prune on a random-weight model, on nonsense answers and with the other
    ablation: for each, whether a circuit met the target (and verified) and its size."""
    shuffled = permuted_run(run, config.seed)
    means = pretraining_means(shuffled)
    if config.ablation == "zero":
        means = {hook: torch.zeros_like(value) for hook, value in means.items()}
    other = replace(config, ablation=OTHER_ABLATION[config.ablation])
    cases = {
        "random_weights": (shuffled, splits, config, CircuitSpace(shuffled.model, means)),
        "nonsense_task": (run, nonsense_splits(splits, config.seed), config, None),
        f"{other.ablation}_ablation": (run, splits, other, None),
    }
    results = {}
    for name, (model_run, task_splits, setting, space) in cases.items():
        log(f"control {name}:")
        try:
            outcome = prune_to_target_loss(
                model_run, task_splits, setting, settings, space=space, checks=False, log=log
            )
        except UserError as error:
            results[name] = {"met": False, "message": str(error)}
            continue
        metrics = outcome.metrics
        results[name] = {
            "met": True,
            **{key: metrics[key] for key in ("nodes", "edges", "circuit_loss")},
            "verification_loss": metrics["verification"]["loss"],
        }
    return results
