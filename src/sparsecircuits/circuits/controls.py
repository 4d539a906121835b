"""Controls that tell a real circuit from what pruning finds anywhere.

A 2026 study ("Weight-sparse circuits may be interpretable yet unfaithful") found that learned
pruning also reaches low task loss on nonsense tasks and in random-weight models. So we run the
same recipe where no real circuit can exist:
- random weights: the same architecture with each weight tensor's entries permuted (the same
  values and the same fraction of zeros, no learned structure), its means measured afresh;
- a learnable nonsense task (tasks.controls.nonsense_name_split): the answer follows from the
  prompt by an arbitrary rule the model never learned, so pruning can assemble a "circuit"
  for it from nodes that happen to correlate with the rule; the acceptance guard
  (circuits.acceptance) must reject it;
- the other ablation: zero instead of mean (or the reverse), as the study compares them.
Each result says whether a circuit met the target (and verified) and whether the guard
accepts it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace

import torch

from sparsecircuits.circuits.checks import OTHER_ABLATION
from sparsecircuits.circuits.config import PruneConfig
from sparsecircuits.circuits.pipeline import prune_to_target_loss
from sparsecircuits.circuits.space import CircuitSpace, replacement_values
from sparsecircuits.circuits.task_data import TaskSplits, task_splits
from sparsecircuits.errors import UserError
from sparsecircuits.loading import Run

NONSENSE_TASK = "nonsense_name_split"


def permuted_run(run: Run, seed: int = 0) -> Run:
    """`run` with each parameter tensor's entries shuffled (the model is copied)."""
    model = copy.deepcopy(run.model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            order = torch.randperm(param.numel(), generator=generator).to(param.device)
            param.copy_(param.flatten()[order].view_as(param))
    return replace(run, model=model)


def pruned_controls(
    run: Run, splits: TaskSplits, config: PruneConfig, log: Callable[[str], None] = print
) -> dict:
    """The same prune on a random-weight model, on the learnable nonsense task and with the
    other ablation: for each, whether a circuit met the target (and verified), its size and
    the guard's verdict."""
    shuffled = permuted_run(run, config.seed)
    options = config.strict_options()
    means = replacement_values(
        shuffled,
        config.ablation,
        options["embedding_nodes"],
        options["frozen_norm_scale"],
        cached=False,
    )
    other = replace(config, ablation=OTHER_ABLATION[config.ablation])
    nonsense = task_splits(run, NONSENSE_TASK, None, config.seed)
    shuffled_space = CircuitSpace(shuffled.model, means, **options)
    cases = {
        "random_weights": (shuffled, splits, config, shuffled_space),
        "nonsense_task": (run, nonsense, config, None),
        f"{other.ablation}_ablation": (run, splits, other, None),
    }
    results = {}
    for name, (model_run, task_splits_, setting, space) in cases.items():
        log(f"control {name}:")
        try:
            outcome = prune_to_target_loss(
                model_run, task_splits_, setting, space=space, checks=False, log=log
            )
        except UserError as error:
            results[name] = {"met": False, "accepted": False, "message": str(error)}
            continue
        metrics = outcome.metrics
        keys = ("nodes", "edges", "circuit_loss", "full_model_loss", "accepted", "reason")
        results[name] = {
            "met": True,
            **{key: metrics[key] for key in keys},
            "verification_loss": metrics["verification"]["loss"],
        }
    return results
