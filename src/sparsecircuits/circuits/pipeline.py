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

from sparsecircuits.circuits.acceptance import acceptance, agreement
from sparsecircuits.circuits.checks import circuit_checks
from sparsecircuits.circuits.config import PruneConfig
from sparsecircuits.circuits.prune import (
    Calibration,
    MaskTraining,
    Measured,
    calibrated_loss,
    margin_loss,
)
from sparsecircuits.circuits.space import CircuitSpace, circuit_space
from sparsecircuits.circuits.sweep import sweep_mask_settings
from sparsecircuits.circuits.task_data import TaskSplits
from sparsecircuits.circuits.trim import TrimResult, trim_found_circuit
from sparsecircuits.circuits.verify import GrowthChain, Verification, verify_circuit
from sparsecircuits.errors import UserError
from sparsecircuits.loading import Run

# Bumped whenever a change alters what a prune returns: stored results are keyed by it.
RECIPE_VERSION = 5
# Random circuits drawn for the random control; the median of their losses is reported.
RANDOM_DRAWS = 5


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
    trim: bool = True,
    space: CircuitSpace | None = None,
    checks: bool = True,
    log: Callable[[str], None] = print,
) -> PruneOutcome:
    """The smallest circuit of the task meeting `config.target_loss` over the sweep of
    mask-training settings `config.sweep` names, trimmed node by node if `trim`, and verified;
    with `checks`, also measured under the other ablation (circuits.checks). `space` replaces
    the run's own circuit space (a control model's, with its own means). The effort spent is
    counted in `metrics["effort"]`: settings, mask steps, prompts run forward, seconds.

    Raises UserError when no setting reaches the target (saying the best loss reached), or no
    circuit meets it on the verification pairs.
    """
    started = time.perf_counter()
    task, target = splits.name, config.target_loss
    space = space or circuit_space(run, config.ablation, **config.strict_options())
    forwards_before = space.prompts_run
    full = float(margin_loss(space.margins(splits.select)).mean())
    log(f"{task}: full model selection loss {full:.4f} (target {target}), {space.size:,} nodes")

    sweep = sweep_mask_settings(space, splits, config, log)
    if sweep.best is None:
        raise UserError(
            f"no circuit of {task} reached target loss {target}: best selection loss "
            f"{sweep.closest:.4f} (full model {full:.4f}); try a higher --target-loss"
        )
    found = sweep.best
    trimmed, verified = trim_and_verify(
        space, found.search.circuit, found.training, splits, config, full, trim, log
    )
    metrics = measure_circuit(space, verified.keep, verified.calibration, splits, config)
    if checks:
        metrics |= circuit_checks(run, space, config.ablation, verified.keep, splits)
    metrics["seconds"] = time.perf_counter() - started
    metrics["effort"] = {
        "settings": len(sweep.history),
        "mask_steps": len(sweep.history) * config.steps,
        "prompts_run": space.prompts_run - forwards_before,
        "seconds": metrics["seconds"],
    }
    metrics["trim"] = {} if trimmed is None else trim_summary(trimmed)
    metrics["verification"] = verified.summary
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


def trim_and_verify(
    space: CircuitSpace,
    circuit: Measured,
    ranked: MaskTraining,
    splits: TaskSplits,
    config: PruneConfig,
    full_loss: float,
    trim: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[TrimResult | None, Verification]:
    """A circuit that meets the target on the selection pairs, trimmed node by node (lowest
    `ranked.tau` first) if `trim`, then confirmed on the verification pairs, grown back along
    trimming's drops and then `ranked.ranking` where it fails there: the post-processing every
    found circuit gets, pruned or not (circuits.attribution's EAP circuits too).

    Raises UserError when no circuit of that chain meets the target on the verification pairs.
    """
    drops: list = []
    trimmed: TrimResult | None = None
    if trim:
        trim_started = time.perf_counter()
        trimmed = trim_found_circuit(space, circuit, ranked.tau, splits.select, config)
        circuit, drops = trimmed.circuit, trimmed.drops
        log(
            f"  trimmed to {circuit.nodes} nodes, {space.count_edges(circuit.keep)} edges "
            f"({trimmed.tried} drops tried), selection loss {circuit.loss:.4f} "
            f"[{time.perf_counter() - trim_started:.0f} s]"
        )
    chain = GrowthChain(circuit.keep, drops, ranked.ranking, config.regrow_by_need)
    verified = verify_circuit(space, chain, splits.select, splits.verify, config)
    checked = verified.summary
    log(
        f"  verified on {splits.verify.n_pairs} other pairs: loss {checked['loss_as_chosen']:.4f}"
        f" as chosen, {checked['loss']:.4f} with {checked['nodes_added']} nodes added back"
        f" [{checked['seconds']:.0f} s]"
    )
    if not checked["met"]:
        raise UserError(
            f"circuits of {splits.name} meet target loss {config.target_loss} on the selection "
            f"pairs but none on the verification pairs: best {checked['loss']:.4f} (full model "
            f"{full_loss:.4f}); try a higher --target-loss"
        )
    return trimmed, verified


@torch.no_grad()
def measure_circuit(
    space: CircuitSpace,
    keep: torch.Tensor,
    calibration: Calibration,
    splits: TaskSplits,
    config: PruneConfig,
) -> dict:
    """Sufficiency, necessity, agreement with the full model and the random control of a
    circuit, on the test pairs, and whether it is accepted as the model's (circuits.acceptance).
    """
    test = splits.test
    margin = calibration.apply(space.margins(test, keep), test)
    full_margin = space.margins(test)
    full_loss = float(margin_loss(full_margin).mean())
    agreeing = agreement(margin, full_margin)
    generator = torch.Generator().manual_seed(config.seed)
    random_losses = [
        calibrated_loss(space, random_like(space, keep, generator), splits.select, test)
        for _ in range(RANDOM_DRAWS)
    ]
    return {
        "nodes": int(keep.sum()),
        "edges": space.count_edges(keep),
        "circuit_loss": float(margin_loss(margin).mean()),
        "circuit_accuracy": float((margin > 0).float().mean()),
        "full_model_loss": full_loss,
        "full_model_accuracy": float((full_margin > 0).float().mean()),
        "agreement_with_full_model": agreeing,
        "ablated_circuit_loss": calibrated_loss(space, ~keep, splits.select, test),
        "random_circuit_loss": statistics.median(random_losses),
        "random_circuit_losses": random_losses,
        "test_pairs": test.n_pairs,
        **acceptance(full_loss, agreeing, config.target_loss),
    }


def random_like(
    space: CircuitSpace, keep: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """A random circuit with as many nodes as `keep` in every (layer, kind) group, so the
    control has the circuit's mix of reads, heads, neurons and writes, not a uniform draw
    that would put most of its nodes where few matter."""
    drawn = space.empty()
    for group in space.groups:
        span = space.span(group)
        count = int(keep[span].sum())
        chosen = torch.randperm(group.width, generator=generator)[:count]
        drawn[span.start + chosen] = True
    return drawn


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
