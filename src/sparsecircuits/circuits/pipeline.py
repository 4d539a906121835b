"""From a trained run and a task to a verified circuit: prune, trim, verify, measure.

`prune_to_target_loss` reads top to bottom: build the model's circuit space, sweep a few
mask-training settings (circuits.sweep) for the smallest circuit meeting the target on the
selection pairs, trim it node by node (circuits.trim), confirm it on verification pairs,
growing it back where it fails there (circuits.verify), then measure it on the test pairs:
sufficiency (everything outside the circuit ablated), necessity (only the circuit ablated) and
a control (a random circuit of the same size). Every step is counted in settings, steps and
pairs, never in seconds, so a prune is reproducible.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from sparsecircuits.circuits.checks import circuit_checks
from sparsecircuits.circuits.prune import Calibration, PruneConfig, calibrated_loss, margin_loss
from sparsecircuits.circuits.space import CircuitSpace, circuit_space
from sparsecircuits.circuits.sweep import DEFAULT_SETTINGS, sweep_mask_settings
from sparsecircuits.circuits.task_data import TaskSplits
from sparsecircuits.circuits.trim import TrimResult, trim_found_circuit
from sparsecircuits.circuits.verify import GrowthChain, verify_circuit
from sparsecircuits.errors import UserError
from sparsecircuits.loading import Run
from sparsecircuits.tasks import TaskBatch

# Bumped whenever a change alters what a prune returns: stored results are keyed by it.
RECIPE_VERSION = 4


@dataclass
class PruneOutcome:
    task: str
    space: CircuitSpace
    keep: torch.Tensor
    scores: torch.Tensor  # every node's final mask parameter
    calibration: Calibration
    config: PruneConfig
    metrics: dict
    sweep: list[dict] = field(default_factory=list)


def prune_to_target_loss(
    run: Run,
    splits: TaskSplits,
    config: PruneConfig,
    settings: int = DEFAULT_SETTINGS,
    trim: bool = True,
    space: CircuitSpace | None = None,
    checks: bool = True,
    log: Callable[[str], None] = print,
) -> PruneOutcome:
    """The smallest circuit of the task meeting `config.target_loss` over a sweep of at most
    `settings` mask-training settings, trimmed node by node if `trim`, and verified; with
    `checks`, also measured under the other ablation and on nonsense answers (circuits.checks).
    `space` replaces the run's own circuit space (a control model's, with its own means).

    Raises UserError when no setting reaches the target (saying the best loss reached), or no
    circuit meets it on the verification pairs.
    """
    started = time.perf_counter()
    task, target = splits.name, config.target_loss
    space = space or circuit_space(run, config.ablation)
    full = float(margin_loss(space.margins(splits.select)).mean())
    log(f"{task}: full model selection loss {full:.4f} (target {target}), {space.size:,} nodes")

    sweep = sweep_mask_settings(space, splits, config, settings, log)
    if sweep.best is None:
        raise UserError(
            f"no circuit of {task} reached target loss {target}: best selection loss "
            f"{sweep.closest:.4f} (full model {full:.4f}); try a higher --target-loss"
        )
    found = sweep.best
    circuit, drops = found.search.circuit, []
    trimmed: TrimResult | None = None
    if trim:
        trim_started = time.perf_counter()
        trimmed = trim_found_circuit(
            space,
            circuit,
            found.training.tau,
            splits.select,
            target,
            config.trim_margin,
            config.clean_up,
            config.trim_tries,
        )
        circuit, drops = trimmed.circuit, trimmed.drops
        log(
            f"  trimmed to {circuit.nodes} nodes, {space.count_edges(circuit.keep)} edges "
            f"({trimmed.tried} drops tried), selection loss {circuit.loss:.4f} "
            f"[{time.perf_counter() - trim_started:.0f} s]"
        )
    chain = GrowthChain(circuit.keep, drops, found.training.ranking, config.regrow_by_need)
    verified = verify_circuit(space, chain, splits.select, splits.verify, target, config.clean_up)
    checked = verified.summary
    log(
        f"  verified on {splits.verify.n_pairs} other pairs: loss {checked['loss_as_chosen']:.4f}"
        f" as chosen, {checked['loss']:.4f} with {checked['nodes_added']} nodes added back"
        f" [{checked['seconds']:.0f} s]"
    )
    if not checked["met"]:
        raise UserError(
            f"circuits of {task} meet target loss {target} on the selection pairs but none on "
            f"the verification pairs: best {checked['loss']:.4f} (full model {full:.4f}); "
            "try a higher --target-loss"
        )
    metrics = measure_circuit(
        space, verified.keep, verified.calibration, splits.select, splits.test, config.seed
    )
    if checks:
        metrics |= circuit_checks(run, space, config.ablation, verified.keep, splits)
    metrics["seconds"] = time.perf_counter() - started
    metrics["trim"] = {} if trimmed is None else trim_summary(trimmed)
    metrics["verification"] = checked
    return PruneOutcome(
        task,
        space,
        verified.keep,
        found.training.tau,
        verified.calibration,
        found.config,
        metrics,
        sweep.history,
    )


@torch.no_grad()
def measure_circuit(
    space: CircuitSpace,
    keep: torch.Tensor,
    calibration: Calibration,
    select: TaskBatch,
    test: TaskBatch,
    seed: int = 0,
) -> dict:
    """Sufficiency, necessity and the random control of a circuit, on the test pairs."""
    margin = calibration.apply(space.margins(test, keep), test)
    full_margin = space.margins(test)
    generator = torch.Generator().manual_seed(seed)
    random_keep = space.empty()
    random_keep[torch.randperm(space.size, generator=generator)[: int(keep.sum())]] = True
    return {
        "nodes": int(keep.sum()),
        "edges": space.count_edges(keep),
        "circuit_loss": float(margin_loss(margin).mean()),
        "circuit_accuracy": float((margin > 0).float().mean()),
        "full_model_loss": float(margin_loss(full_margin).mean()),
        "full_model_accuracy": float((full_margin > 0).float().mean()),
        "ablated_circuit_loss": calibrated_loss(space, ~keep, select, test),
        "random_circuit_loss": calibrated_loss(space, random_keep, select, test),
        "test_pairs": test.n_pairs,
    }


def trim_summary(result: TrimResult) -> dict:
    return {
        "nodes_before": result.circuit.nodes + sum(len(drop.nodes) for drop in result.drops),
        "dropped": len(result.drops),
        "nodes_dropped": sum(len(drop.nodes) for drop in result.drops),
        "tried": result.tried,
        # How far the drops that were refused missed the target, to tune trimming by.
        "rejected_loss_median": (
            statistics.median(result.rejected_losses) if result.rejected_losses else None
        ),
    }
