"""A small sweep of mask-training settings: the node penalty k_coef, steered by results.

The paper tuned pruning per (model, task) with 256 runs of a black-box optimiser; a CPU affords
a few. The sweep starts at the config's own k_coef (3e-4 by default) and moves by what
each setting did. A penalty too strong for the model switches off nodes the task needs; the
circuit then has to be completed from nodes the masks ranked at random, and it comes out huge
(dense models: thousands of nodes with 20 left active). So after such a setting the next one
penalises less, and after a good one more. The budget is a number of settings, each a fixed
number of steps, so the same command and seed give the same circuit on an idle or a busy
machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from sparsecircuits.circuits.config import PruneConfig
from sparsecircuits.circuits.prune import (
    CircuitSearch,
    MaskTraining,
    smallest_circuit_meeting_target,
    train_node_masks,
)
from sparsecircuits.circuits.space import CircuitSpace
from sparsecircuits.circuits.task_data import TaskSplits

# Node penalties the sweep chooses from, around the paper's centre (1e-4), and how many it tries
# by default: one setting fits the 3-minute budget of 2 CPU cores (docs/pruning-recipe.md).
K_COEFS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3)
DEFAULT_SETTINGS = 1
# The equal-effort grid (config.sweep == 0): every model and task gets these (k_coef, lr)
# settings, so a comparison of circuit sizes does not measure how well one recipe suits one
# model. Three penalties around the recipe's and two learning rates, the recipe's and the
# paper's 3e-3.
GRID = tuple((k_coef, lr) for k_coef in (1e-4, 3e-4, 1e-3) for lr in (1e-2, 3e-3))


def pruned_too_hard(result: dict) -> bool:
    """Did the target need nodes the trained masks had switched off (or was it not met)?"""
    return not result["met"] or result["k"] > result["active_after_training"]


def next_k_coef(history: list[dict], candidates: tuple[float, ...] = K_COEFS) -> float | None:
    """The untried penalty to run next: the nearest weaker one after a setting that pruned too
    hard, the nearest stronger one after a good one, never past a penalty already known to be
    too strong or below one known to be good. None when nothing is left between them."""
    good = [h["k_coef"] for h in history if not pruned_too_hard(h)]
    too_strong = [h["k_coef"] for h in history if pruned_too_hard(h)]
    low, high = max(good, default=0.0), min(too_strong, default=float("inf"))
    tried = {h["k_coef"] for h in history}
    open_range = [c for c in candidates if low < c < high and c not in tried]
    last = history[-1]["k_coef"]
    if pruned_too_hard(history[-1]):
        return max((c for c in open_range if c < last), default=None)
    return min((c for c in open_range if c > last), default=None)


@dataclass
class Found:
    search: CircuitSearch
    training: MaskTraining
    config: PruneConfig
    edges: int


@dataclass
class SweepResult:
    best: Found | None  # the smallest circuit (in edges) meeting the target, if any
    history: list[dict]
    closest: float  # the lowest selection loss any setting reached


def sweep_mask_settings(
    space: CircuitSpace,
    splits: TaskSplits,
    config: PruneConfig,
    log: Callable[[str], None] = print,
) -> SweepResult:
    """Train masks at each setting of the sweep (`config.sweep` adaptive steps, or the grid),
    and keep the smallest circuit, in edges, meeting the target on the selection pairs."""
    best, history, closest = None, [], float("inf")
    grid = config.sweep == 0
    total = len(GRID) if grid else config.sweep
    setting: PruneConfig | None = config
    for index in range(total):
        if grid:
            setting = replace(config, k_coef=GRID[index][0], lr=GRID[index][1])
        if setting is None:
            log(f"  sweep done after {index} settings: no untried penalty left between them")
            break
        started = time.perf_counter()
        training = train_node_masks(space, splits.train, setting)
        trained = time.perf_counter()
        search = smallest_circuit_meeting_target(space, training.ranking, splits.select, setting)
        circuit = search.circuit
        met = circuit.loss <= config.target_loss
        edges = space.count_edges(circuit.keep)
        history.append(
            {
                "k_coef": setting.k_coef,
                "lr": setting.lr,
                "k": search.k,
                "nodes": circuit.nodes,
                "edges": edges,
                "select_loss": circuit.loss,
                "met": met,
                "active_after_training": training.active,
                "ks_tried": len(search.tried),
            }
        )
        log(
            f"  sweep {index + 1}/{total} k_coef {setting.k_coef:g} lr {setting.lr:g}: "
            f"{circuit.nodes} nodes, {edges} edges ({training.active} active after mask "
            f"training), selection loss {circuit.loss:.4f}{'' if met else ' (target not met)'} "
            f"[masks {trained - started:.0f} s, search {time.perf_counter() - trained:.0f} s "
            f"over {len(search.tried)} k]"
        )
        closest = min(closest, circuit.loss)
        if met and (best is None or edges < best.edges):
            best = Found(search, training, setting, edges)
        if not grid:
            k_coef = next_k_coef(history)
            setting = None if k_coef is None else replace(config, k_coef=k_coef)
    return SweepResult(best, history, closest)
