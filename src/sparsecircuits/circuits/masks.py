"""Node masks applied through the model's hook points.

A node that is switched off is replaced by its mean activation over pretraining data (mean
ablation, the paper's default) or by zero. During mask training the switch is a Heaviside step
of a learned parameter tau in [-1, 1], with the derivative of a sigmoid as its gradient.
"""

from __future__ import annotations

import torch
from torch import nn

from sparsecircuits.circuits.nodes import NodeGroup
from sparsecircuits.model.hooks import HookFn


class HeavisideWithSigmoidGradient(torch.autograd.Function):
    """Forward: 1 where tau > 0 else 0. Backward: d/dtau sigmoid(tau / temperature)."""

    @staticmethod
    def forward(ctx, tau: torch.Tensor, temperature: float) -> torch.Tensor:
        ctx.save_for_backward(tau)
        ctx.temperature = temperature
        return (tau > 0).to(tau.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (tau,) = ctx.saved_tensors
        sigmoid = torch.sigmoid(tau / ctx.temperature)
        return grad * sigmoid * (1 - sigmoid) / ctx.temperature, None


def heaviside(tau: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    return HeavisideWithSigmoidGradient.apply(tau, temperature)


def blend_hook(group: NodeGroup, keep: torch.Tensor, replacement: torch.Tensor) -> HookFn:
    """Hook that keeps each node where `keep` is 1 and uses `replacement` where it is 0.

    `keep` may be a float tensor carrying gradients (mask training) or a 0/1 mask. The hook
    may be the group's own or the one before its AbsTopK: q/k/v are [b, p, head, d_head] at
    the first and [b, p, head * d_head] at the second.
    """

    def apply(x: torch.Tensor, hook: object) -> torch.Tensor:
        shape = x.shape
        flat = x.flatten(-2) if group.kind in ("q", "k", "v") and x.dim() == 4 else x
        mixed = torch.lerp(replacement.to(flat.dtype), flat, keep)  # one fused op
        return mixed.view(shape)

    return apply


class NodeMasks(nn.Module):
    """One learnable tau per node, for every node group of the model."""

    def __init__(
        self,
        groups: list[NodeGroup],
        replacements: dict[str, torch.Tensor],
        init_bias: float = 0.1,
        init_noise: float = 0.01,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.groups = groups
        self.temperature = temperature
        self.replacements = replacements
        self.tau = nn.ParameterList(
            nn.Parameter(init_bias + init_noise * torch.randn(g.width, generator=generator))
            for g in groups
        )

    def switches(self) -> list[torch.Tensor]:
        """Each group's current (training-mode) 0/1 masks, with the surrogate gradient."""
        return [heaviside(tau, self.temperature) for tau in self.tau]

    def hooks(self) -> list[tuple[str, HookFn]]:
        """Hooks applying the current masks at each group's own hook point
        (CircuitSpace.blend_hooks places them as the space's options say)."""
        return [
            (group.hook, blend_hook(group, switch, self.replacements[group.hook]))
            for group, switch in zip(self.groups, self.switches(), strict=True)
        ]

    def active_count(self) -> torch.Tensor:
        """Number of switched-on nodes, differentiable through the surrogate gradient."""
        return sum(heaviside(tau, self.temperature).sum() for tau in self.tau)

    @torch.no_grad()
    def clamp_(self) -> None:
        for tau in self.tau:
            tau.clamp_(-1.0, 1.0)

    def scores(self) -> torch.Tensor:
        """Every node's tau, concatenated in group order (for ranking nodes)."""
        return torch.cat([tau.detach() for tau in self.tau])
