"""From a trained run and a task to a verified circuit: prune, sweep, check, measure.

`prune_to_target_loss` runs a small automatic sweep over mask-training settings, keeps the
smallest circuit that meets the target on held-out pairs, trims it node by node in the time
left, confirms it on verification pairs (growing it back where it fails there, see
circuits.verify), then measures it on the test pairs: sufficiency (everything outside the
circuit ablated), necessity (only the circuit ablated) and a control (a random circuit of the
same size).

The sweep steers the node penalty k_coef by what each setting did. A penalty too strong for
the model switches off nodes the task needs; the circuit then has to be completed from nodes
the masks ranked at random, and it comes out huge (dense models: thousands of nodes with 20
left active). So after such a setting the next one penalises less, and after a good one more.
"""

from __future__ import annotations

import statistics
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
    calibrated_fit,
    fit_calibration,
    margin_loss,
    smallest_circuit_meeting_target,
    train_node_masks,
)
from sparsecircuits.circuits.task_data import TaskSplits
from sparsecircuits.circuits.trim import TrimResult, node_degrees, trim_circuit, trim_order
from sparsecircuits.circuits.verify import GrowthChain, verify_circuit
from sparsecircuits.errors import UserError
from sparsecircuits.model import GPT
from sparsecircuits.tasks import TaskBatch
from sparsecircuits.train import Run

# Mask-training settings the sweep chooses from (each overrides PruneConfig fields). It starts
# with the PruneConfig's own (the first of these unless changed) and moves to a weaker or
# stronger node penalty as `next_setting` decides.
DEFAULT_SWEEP = (
    {"k_coef": 1e-3, "lr": 3e-2},
    {"k_coef": 3e-3, "lr": 3e-2},
    {"k_coef": 3e-4, "lr": 3e-2},
    {"k_coef": 1e-2, "lr": 3e-2},
    {"k_coef": 1e-4, "lr": 3e-2},
)
# Seconds of the time budget the sweep leaves for trimming the chosen circuit, and trimming
# for verifying it.
TRIM_RESERVE = 45.0
VERIFY_RESERVE = 20.0
# Bumped whenever a change alters what a prune returns: stored results are keyed by it.
RECIPE_VERSION = 3


def pruned_too_hard(result: dict) -> bool:
    """Did the target need nodes the trained masks had switched off (or was it not met)?"""
    return not result["met"] or result["nodes"] > result["active_after_training"]


def next_setting(candidates: tuple[dict, ...], history: list[dict]) -> dict | None:
    """The untried setting to run next: the nearest weaker penalty after a setting that pruned
    too hard, the nearest stronger one after a good one, never past a penalty already known to
    be too strong or below one known to be good. None when nothing is left between them."""
    good = [h["k_coef"] for h in history if not pruned_too_hard(h)]
    too_strong = [h["k_coef"] for h in history if pruned_too_hard(h)]
    low, high = max(good, default=0.0), min(too_strong, default=float("inf"))
    tried = {h["k_coef"] for h in history}
    open_range = [c for c in candidates if low < c["k_coef"] < high and c["k_coef"] not in tried]
    last = history[-1]["k_coef"]
    if pruned_too_hard(history[-1]):
        weaker = [c for c in open_range if c["k_coef"] < last]
        return max(weaker, key=lambda c: c["k_coef"], default=None)
    stronger = [c for c in open_range if c["k_coef"] > last]
    return min(stronger, key=lambda c: c["k_coef"], default=None)


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
    splits: TaskSplits,
    config: PruneConfig,
    settings: int = 4,
    time_budget: float = 170.0,
    trim: bool = True,
    log=print,
) -> PruneOutcome:
    """The smallest circuit of `task` meeting `config.target_loss` over a sweep of at most
    `settings` mask-training settings, trimmed node by node if `trim` and verified, all within
    about `time_budget` seconds.

    Raises UserError when no setting reaches the target (saying the best loss reached), or no
    circuit meets it on the verification pairs.
    """
    started = time.perf_counter()
    task, train, heldout, verify, test = splits.name, *splits.batches()
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
    # The first setting is the config's own (by default the first of DEFAULT_SWEEP).
    overrides: dict | None = {"k_coef": config.k_coef, "lr": config.lr}
    for index in range(max(1, settings)):
        if overrides is None:
            log(f"  sweep done after {index} settings: no untried penalty left between them")
            break
        # Time is kept back for trimming once there is a circuit worth trimming: after
        # settings that pruned too hard, a better setting is worth more than trimming.
        worth_trimming = trim and any(not pruned_too_hard(h) for h in history)
        sweep_budget = time_budget - (TRIM_RESERVE if worth_trimming else 0.0)
        if index and time.perf_counter() - started + longest > sweep_budget:
            log(f"  sweep stopped after {index} settings: the next would pass {sweep_budget:.0f} s")
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
            f"  sweep {index + 1}/{settings} {overrides}: {size} nodes "
            f"({history[-1]['active_after_training']} active after mask training), held-out "
            f"loss {search.loss:.4f}{'' if met else ' (target not met)'} "
            f"[masks {trained - setting_started:.0f} s, search {searched - trained:.0f} s "
            f"over {len(search.tried)} k]"
        )
        closest = min(closest, search.loss)
        if met and (best is None or size < int(best[0].keep.sum())):
            best = (search, scores, setting)
        overrides = next_setting(DEFAULT_SWEEP, history)
    if best is None:
        raise UserError(
            f"no circuit of {task} reached target loss {config.target_loss}: best held-out loss "
            f"{closest:.4f} (full model {full:.4f}); try a higher --target-loss"
        )
    search, scores, setting = best
    trimmed: TrimResult | None = None
    if trim:
        deadline = started + time_budget - VERIFY_RESERVE
        trimmed = trim_found_circuit(
            model, groups, replacements, search, scores, heldout, config.target_loss, deadline, log
        )
    chain = GrowthChain(
        search.keep if trimmed is None else trimmed.keep,
        [] if trimmed is None else trimmed.drops,
        scores,
    )
    verified = verify_circuit(
        model, groups, replacements, chain, heldout, verify, config.target_loss
    )
    checked = verified.summary
    log(
        f"  verified on {verify.n_pairs} other pairs: loss {checked['loss_as_chosen']:.4f}"
        f" as chosen, {checked['loss']:.4f} with {checked['nodes_added']} nodes added back"
        f" [{checked['seconds']:.0f} s]"
    )
    if not checked["met"]:
        raise UserError(
            f"circuits of {task} meet target loss {config.target_loss} on the held-out pairs but "
            f"none on the verification pairs: best {checked['loss']:.4f} (full model {full:.4f}); "
            "try a higher --target-loss"
        )
    keep, calibration = verified.keep, verified.calibration
    metrics = measure_circuit(
        run, groups, keep, replacements, calibration, heldout, test, seed=config.seed
    )
    metrics["seconds"] = time.perf_counter() - started
    metrics["trim"] = {} if trimmed is None else trim_summary(trimmed)
    metrics["verification"] = verified.summary
    return PruneOutcome(
        task,
        groups,
        keep,
        scores,
        replacements,
        calibration,
        setting,
        metrics,
        history,
    )


def trim_found_circuit(
    model: GPT,
    groups: list[NodeGroup],
    replacements: dict[str, torch.Tensor],
    search: CircuitSearch,
    scores: torch.Tensor,
    heldout: TaskBatch,
    target_loss: float,
    deadline: float,
    log=print,
) -> TrimResult:
    """`search`'s circuit with the nodes it does not need dropped (see circuits.trim)."""
    trim_started = time.perf_counter()
    order = trim_order(search.keep, scores, node_degrees(model, groups, search.keep))
    result = trim_circuit(
        lambda keep: calibrated_fit(model, groups, replacements, keep, heldout)[0],
        search.keep,
        order,
        target_loss,
        deadline,
        search.loss,
    )
    result.seconds = time.perf_counter() - trim_started
    log(
        f"  trimmed {len(result.drops)} of {len(order)} nodes, held-out loss {result.loss:.4f} "
        f"[{result.seconds:.0f} s, {result.tried} tried"
        f"{'' if result.finished else ', deadline hit'}]"
    )
    return result


def trim_summary(result: TrimResult) -> dict:
    return {
        "nodes_before": int(result.keep.sum()) + len(result.drops),
        "dropped": len(result.drops),
        "tried": result.tried,
        "finished": result.finished,
        "seconds": result.seconds,
        # How far the drops that were refused missed the target, to tune trimming by.
        "rejected_loss_median": (
            statistics.median(result.rejected_losses) if result.rejected_losses else None
        ),
    }
