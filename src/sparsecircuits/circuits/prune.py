"""Learned pruning: the smallest set of nodes that still does a task (spec section 3).

1. Train one mask parameter tau per node (Heaviside forward, sigmoid surrogate gradient) to
   minimise task loss + k_coef x active nodes, with everything switched off ablated, using the
   paper's optimiser (AdamW, betas (0.9, 0.95), gradients clipped to norm 1) at a higher
   learning rate for fewer steps (1e-2 x 150 steps of 32 pairs; the paper: 3e-3, 64 pairs, far
   more steps). A logit scale and per-answer shifts are learned with the masks, so the masks
   never keep nodes only to repair calibration.
2. Rank the nodes: by tau, then (many taus end clamped at +-1) by their mean tau over training,
   a node on since early outranking one that just arrived, then at random (seeded).
3. Discretise: the smallest k whose top-k circuit, cleaned of idle nodes (circuits.cleanup),
   meets the target loss on the selection pairs. The loss is not monotone in k, so we scan a
   geometric grid upward and bisect only inside the first bracket that meets the target.
4. Calibrate: a logit scale and per-answer-token shift, fitted by L-BFGS on the selection pairs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from sparsecircuits.circuits.cleanup import remove_idle_nodes
from sparsecircuits.circuits.config import PruneConfig
from sparsecircuits.circuits.masks import NodeMasks
from sparsecircuits.circuits.space import CircuitSpace
from sparsecircuits.tasks import TaskBatch, margin_loss


@dataclass
class Calibration:
    """Calibrated margin = scale * margin + shift[correct token] - shift[wrong token]."""

    scale: float = 1.0
    shift: dict[int, float] = field(default_factory=dict)

    def apply(self, margin: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
        return self.scale * margin + self.shifts(batch.correct) - self.shifts(batch.wrong)

    def shifts(self, token_ids: torch.Tensor) -> torch.Tensor:
        return torch.tensor([self.shift.get(int(i), 0.0) for i in token_ids])

    def to_dict(self) -> dict:
        return {"scale": self.scale, "shift": {str(k): v for k, v in self.shift.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        return cls(data["scale"], {int(k): v for k, v in data["shift"].items()})


class LearnedCalibration(nn.Module):
    """The calibration's scale and shifts as parameters, trained with the masks."""

    def __init__(self, batch: TaskBatch) -> None:
        super().__init__()
        tokens = sorted({int(t) for t in torch.cat([batch.correct, batch.wrong])})
        self.column = {token: i for i, token in enumerate(tokens)}
        self.scale = nn.Parameter(torch.ones(()))
        self.shift = nn.Parameter(torch.zeros(len(tokens)))

    def forward(self, margin: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
        correct = torch.tensor([self.column[int(t)] for t in batch.correct])
        wrong = torch.tensor([self.column[int(t)] for t in batch.wrong])
        return self.scale * margin + self.shift[correct] - self.shift[wrong]


def fit_calibration(margin: torch.Tensor, batch: TaskBatch, iterations: int = 50) -> Calibration:
    """Fit scale and per-token shifts by L-BFGS on (detached) margins."""
    margin = margin.detach().double()
    tokens = sorted({int(t) for t in torch.cat([batch.correct, batch.wrong])})
    column = {token: i for i, token in enumerate(tokens)}
    correct = torch.tensor([column[int(t)] for t in batch.correct])
    wrong = torch.tensor([column[int(t)] for t in batch.wrong])
    scale = torch.ones((), dtype=torch.float64, requires_grad=True)
    shift = torch.zeros(len(tokens), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [scale, shift], max_iter=iterations, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = margin_loss(scale * margin + shift[correct] - shift[wrong]).mean()
        # A whisper of L2 keeps the fit finite when the margins separate perfectly.
        loss = loss + 1e-4 * (shift.square().sum() + (scale - 1).square())
        loss.backward()
        return loss

    optimizer.step(closure)
    shift_values = (shift - shift.mean()).detach().tolist()
    return Calibration(float(scale.detach()), dict(zip(tokens, shift_values, strict=True)))


@dataclass
class MaskTraining:
    ranking: torch.Tensor  # node positions, most needed first
    tau: torch.Tensor  # final mask parameters
    mean_tau: torch.Tensor  # their mean over training (the second score)
    history: list[dict]

    @property
    def active(self) -> int:
        return int((self.tau > 0).sum())


def train_node_masks(space: CircuitSpace, batch: TaskBatch, config: PruneConfig) -> MaskTraining:
    """Learn which nodes the task needs, and rank every node by it."""
    generator = torch.Generator().manual_seed(config.seed)
    masks = NodeMasks(
        space.groups,
        space.replacements,
        config.init_bias,
        config.init_noise,
        config.temperature,
        generator,
    ).to(space.device)
    calibration = LearnedCalibration(batch).requires_grad_(config.learned_calibration)
    optimizer = torch.optim.AdamW(
        [
            {"params": masks.parameters(), "weight_decay": config.weight_decay},
            {"params": calibration.parameters(), "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(0.9, config.beta2),
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / config.steps)
    tau_sum = torch.zeros(space.size)
    history = []
    for step in range(config.steps):
        pairs = torch.randint(
            0, batch.n_pairs, (min(config.batch_pairs, batch.n_pairs),), generator=generator
        )
        sample = batch.subset(pairs).trimmed()
        margin = space.margins(sample, hooks=space.blend_hooks(masks.switches()))
        task_loss = margin_loss(calibration(margin, sample)).mean()
        active = masks.active_count().cpu()  # margins, and so the task loss, are on the CPU
        loss = task_loss + config.k_coef * active
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(masks.parameters(), config.grad_clip)
        optimizer.step()
        schedule.step()
        masks.clamp_()
        tau_sum += masks.scores().cpu()
        if step % 25 == 0 or step == config.steps - 1:
            history.append(
                {"step": step, "task_loss": task_loss.item(), "active": int(active.detach())}
            )
    tau, mean_tau = masks.scores().cpu(), tau_sum / max(1, config.steps)
    if config.tie_break == "index":  # the first recipe's order: ties by node position
        ranking = torch.argsort(tau, descending=True, stable=True)
    else:
        ranking = rank_nodes(tau, mean_tau, generator)
    return MaskTraining(ranking, tau, mean_tau, history)


def rank_nodes(
    tau: torch.Tensor, mean_tau: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Node positions by tau, ties by mean tau, remaining ties at random; highest first."""
    order = torch.randperm(tau.numel(), generator=generator)
    order = order[torch.argsort(mean_tau[order], descending=True, stable=True)]
    return order[torch.argsort(tau[order], descending=True, stable=True)]


def calibrated_pair_losses(
    space: CircuitSpace, keep: torch.Tensor, fit_on: TaskBatch, measure_on: TaskBatch
) -> tuple[Calibration, torch.Tensor]:
    """Per-sequence losses of the circuit `keep` on `measure_on`, after a calibration fitted on
    `fit_on` (as every circuit is calibrated on pairs apart from those it is measured on)."""
    hooks = space.hooks(keep)
    calibration = fit_calibration(space.margins(fit_on, hooks=hooks), fit_on)
    margin = space.margins(measure_on, hooks=hooks)
    return calibration, margin_loss(calibration.apply(margin, measure_on))


def calibrated_loss(
    space: CircuitSpace, keep: torch.Tensor, fit_on: TaskBatch, measure_on: TaskBatch
) -> float:
    return float(calibrated_pair_losses(space, keep, fit_on, measure_on)[1].mean())


@dataclass
class Measured:
    """A cleaned circuit and its calibrated loss on the pairs it was measured on."""

    keep: torch.Tensor
    loss: float
    calibration: Calibration

    @property
    def nodes(self) -> int:
        return int(self.keep.sum())


@torch.no_grad()
def measure_cleaned(
    space: CircuitSpace, keep: torch.Tensor, batch: TaskBatch, clean_up: bool = True
) -> Measured:
    """`keep` cleaned of idle nodes, and its loss on `batch` after a calibration fitted there."""
    keep = remove_idle_nodes(space, keep) if clean_up else keep
    margin = space.margins(batch, keep)
    calibration = fit_calibration(margin, batch)
    return Measured(keep, float(margin_loss(calibration.apply(margin, batch)).mean()), calibration)


@dataclass
class CircuitSearch:
    circuit: Measured  # the smallest circuit meeting the target (or the best one seen)
    k: int  # the top-k it was cleaned from
    tried: list[tuple[int, float]]  # (k, calibrated selection loss) of every k evaluated


@torch.no_grad()
def smallest_circuit_meeting_target(
    space: CircuitSpace, ranking: torch.Tensor, select: TaskBatch, config: PruneConfig
) -> CircuitSearch:
    """The smallest cleaned top-k circuit whose calibrated loss on `select` meets the target;
    if none does, the best circuit found (the caller decides what to say)."""
    seen: dict[int, Measured] = {}

    def loss_at(k: int) -> float:
        if k not in seen:
            keep = space.empty()
            keep[ranking[:k]] = True
            seen[k] = measure_cleaned(space, keep, select, config.clean_up)
        return seen[k].loss

    chosen = smallest_k_meeting_target(loss_at, space.size, config.target_loss)
    return CircuitSearch(seen[chosen], chosen, sorted((k, m.loss) for k, m in seen.items()))


def smallest_k_meeting_target(
    loss_at: Callable[[int], float], total: int, target_loss: float, growth: float = 1.2
) -> int:
    """Smallest k with loss_at(k) <= target, for a loss that is NOT monotone in k.

    Scans a geometric grid upward (so a bad region at large k cannot mislead it), then bisects
    inside the first bracket that meets the target. If no k meets it, returns the best k seen.
    """
    steps = int(math.log(total, growth)) + 2
    grid = sorted({min(total, max(1, round(growth**i))) for i in range(steps)} | {total})
    seen: dict[int, float] = {}

    def measured(k: int) -> float:
        seen.setdefault(k, loss_at(k))
        return seen[k]

    previous = 0
    for k in grid:
        if measured(k) <= target_loss:
            low, high = previous, k
            while high - low > 1:
                middle = (low + high) // 2
                if measured(middle) <= target_loss:
                    high = middle
                else:
                    low = middle
            return high
        previous = k
    return min(seen, key=seen.__getitem__)
