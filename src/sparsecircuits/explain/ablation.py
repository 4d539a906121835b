"""The ablation score: does the explanation carry what the unit does for the output?

Replace the unit's activation, at every position of the scored excerpts, by its simulation
(mapped linearly onto the activation scale by least squares on those same excerpts: the
simulation is in 0..10 units) and measure how far the model's next-token distributions move,
as the Jensen-Shannon divergence averaged over tokens; do the same with the unit held at its
mean activation. Score = 1 - JSD(simulation) / JSD(mean): 1 when the simulation changes
nothing the real activation would not, 0 when it is no better than the mean, negative when
worse. None when holding the unit at its mean moves nothing (the unit has no effect here).
"""

from __future__ import annotations

import torch

from sparsecircuits.explain.units import Unit
from sparsecircuits.loading import Run


@torch.no_grad()
def ablation_score(
    run: Run,
    unit: Unit,
    tokens: list[list[int]],
    true: list[list[float]],
    simulated: list[list[float]],
    mean_activation: float,
) -> float | None:
    model = run.model
    device = next(model.parameters()).device
    batch = torch.tensor(tokens, device=device)
    truth = torch.tensor(true, dtype=torch.float32)
    sim = torch.tensor(simulated, dtype=torch.float32)
    scale, shift = least_squares(sim.flatten(), truth.flatten())
    replacements = {
        "simulation": (scale * sim + shift).to(device),
        "mean": torch.full_like(truth, mean_activation).to(device),
    }
    reference = torch.log_softmax(model(batch).float(), dim=-1)
    divergence = {}
    for name, values in replacements.items():
        with model.hooks([(unit.hook, set_channel(unit, values, run.model_config.d_head))]):
            changed = torch.log_softmax(model(batch).float(), dim=-1)
        divergence[name] = float(jensen_shannon(reference, changed).mean())
    if divergence["mean"] <= 1e-12:
        return None
    return 1.0 - divergence["simulation"] / divergence["mean"]


def set_channel(unit: Unit, values: torch.Tensor, d_head: int):
    """A hook function that writes `values` [batch, pos] into the unit's channel."""

    def hook(x: torch.Tensor, point) -> torch.Tensor:
        x = x.clone()
        if x.dim() == 4:  # q, k, v: [batch, pos, head, d_head]
            x[:, :, unit.index // d_head, unit.index % d_head] = values.to(x.dtype)
        else:
            x[..., unit.index] = values.to(x.dtype)
        return x

    return hook


def least_squares(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Scale and shift of the best fit y ~ scale * x + shift (shift only if x is constant)."""
    x, y = x.double(), y.double()
    variance = float(((x - x.mean()) ** 2).mean())
    if variance == 0:
        return 0.0, float(y.mean())
    scale = float(((x - x.mean()) * (y - y.mean())).mean()) / variance
    return scale, float(y.mean()) - scale * float(x.mean())


def jensen_shannon(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """JSD (nats) between distributions given as log-probabilities, over the last axis."""
    log_m = torch.logaddexp(log_p, log_q) - torch.log(torch.tensor(2.0))
    p, q = log_p.exp(), log_q.exp()
    return 0.5 * ((p * (log_p - log_m)).sum(-1) + (q * (log_q - log_m)).sum(-1))
