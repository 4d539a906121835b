"""Learned pruning: the smallest set of nodes that still does a task (spec section 3).

1. Train one mask parameter per node (Heaviside forward, sigmoid surrogate gradient) to
   minimise task loss + k_coef x active nodes, with everything switched off mean-ablated.
2. Discretise: rank nodes by their mask parameter and find the smallest k whose top-k circuit
   meets the target loss on held-out pairs. The loss is not monotone in k, so we scan a
   geometric grid upward and bisect only inside the first bracket that meets the target.
3. Calibrate: a logit scale and per-answer-token shift, fitted on the held-out pairs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from sparsecircuits.circuits.masks import NodeMasks, fixed_mask_hooks
from sparsecircuits.circuits.nodes import NodeGroup
from sparsecircuits.model import GPT
from sparsecircuits.model.hooks import HookFn
from sparsecircuits.tasks import TaskBatch, margin_loss
from sparsecircuits.tasks import answer_margins as task_answer_margins


@dataclass
class PruneConfig:
    target_loss: float = 0.15
    ablation: str = "mean"  # or "zero"
    steps: int = 300
    batch_pairs: int = 32  # pairs per mask-training step (the time of a step grows with it)
    lr: float = 3e-2
    k_coef: float = 1e-3
    weight_decay: float = 1e-3
    init_bias: float = 0.1
    init_noise: float = 0.01
    temperature: float = 1.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


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


def answer_margins(
    model: GPT, batch: TaskBatch, hooks: list[tuple[str, HookFn]] = (), chunk: int = 32
) -> torch.Tensor:
    """logit(correct) - logit(wrong) at each prompt's last token, under the given hooks."""
    with model.hooks(hooks):
        return task_answer_margins(model, batch, chunk)


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


def train_node_masks(
    model: GPT,
    groups: list[NodeGroup],
    replacements: dict[str, torch.Tensor],
    batch: TaskBatch,
    config: PruneConfig,
) -> tuple[NodeMasks, list[dict]]:
    """Learn which nodes the task needs; returns the masks and a short training history."""
    generator = torch.Generator().manual_seed(config.seed)
    masks = NodeMasks(
        groups, replacements, config.init_bias, config.init_noise, config.temperature, generator
    )
    optimizer = torch.optim.AdamW(
        masks.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / config.steps)
    history = []
    for step in range(config.steps):
        pairs = torch.randint(
            0, batch.n_pairs, (min(config.batch_pairs, batch.n_pairs),), generator=generator
        )
        sample = batch.subset(pairs).trimmed()
        task_loss = margin_loss(answer_margins(model, sample, masks.hooks())).mean()
        active = masks.active_count()
        loss = task_loss + config.k_coef * active
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        masks.clamp_()
        if step % 25 == 0 or step == config.steps - 1:
            history.append(
                {"step": step, "task_loss": task_loss.item(), "active": int(active.detach())}
            )
    return masks, history


@dataclass
class CircuitSearch:
    keep: torch.Tensor  # bool over all nodes, group order
    loss: float  # calibrated held-out loss of the chosen circuit
    calibration: Calibration
    tried: list[tuple[int, float]]  # (k, calibrated held-out loss) of every k evaluated


@torch.no_grad()
def calibrated_fit(
    model: GPT,
    groups: list[NodeGroup],
    replacements: dict[str, torch.Tensor],
    keep: torch.Tensor,
    batch: TaskBatch,
) -> tuple[float, Calibration]:
    """Loss of the circuit `keep` on `batch` after a calibration fitted on the same pairs."""
    margin = answer_margins(model, batch, fixed_mask_hooks(groups, keep, replacements))
    calibration = fit_calibration(margin, batch)
    return float(margin_loss(calibration.apply(margin, batch)).mean()), calibration


@torch.no_grad()
def smallest_circuit_meeting_target(
    model: GPT,
    groups: list[NodeGroup],
    replacements: dict[str, torch.Tensor],
    scores: torch.Tensor,
    heldout: TaskBatch,
    target_loss: float,
) -> CircuitSearch:
    """The smallest top-k circuit (by score) whose calibrated held-out loss meets the target;
    if none does, the best circuit found, with its loss (the caller decides what to say)."""
    order = torch.argsort(scores, descending=True, stable=True)
    total = scores.numel()
    cache: dict[int, tuple[float, Calibration]] = {}

    def loss_at(k: int) -> float:
        if k not in cache:
            keep = torch.zeros(total, dtype=torch.bool)
            keep[order[:k]] = True
            cache[k] = calibrated_fit(model, groups, replacements, keep, heldout)
        return cache[k][0]

    chosen = smallest_k_meeting_target(loss_at, total, target_loss)
    keep = torch.zeros(total, dtype=torch.bool)
    keep[order[:chosen]] = True
    tried = sorted((k, value[0]) for k, value in cache.items())
    return CircuitSearch(keep, cache[chosen][0], cache[chosen][1], tried)


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
