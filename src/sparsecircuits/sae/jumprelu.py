"""JumpReLU (Rajamanoharan et al. 2024, Gemma Scope): f = pre * H(pre - theta) with a learnt
threshold theta per latent, trained on reconstruction + l0_coef * L0. The step's gradient is
zero almost everywhere, so theta learns through a straight-through estimator: a rectangle
kernel of width `jumprelu_bandwidth` around the threshold (the paper's equations 11-12)."""

from __future__ import annotations

import torch
from torch import nn

from sparsecircuits.sae.base import SparseAutoencoder
from sparsecircuits.sae.config import SAEConfig


def _rectangle(u: torch.Tensor) -> torch.Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _Step(torch.autograd.Function):
    """H(z - theta); d/dtheta = -(1/eps) K((z - theta) / eps), nothing to z."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        z, theta = ctx.saved_tensors
        grad_theta = -(1.0 / ctx.eps) * _rectangle((z - theta) / ctx.eps) * grad
        return None, grad_theta.sum(dim=tuple(range(grad.dim() - 1))), None


class _JumpReLU(torch.autograd.Function):
    """z H(z - theta); d/dz = H(z - theta), d/dtheta = -(theta/eps) K((z - theta) / eps)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return z * (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        z, theta = ctx.saved_tensors
        grad_z = (z > theta).to(z.dtype) * grad
        grad_theta = -(theta / ctx.eps) * _rectangle((z - theta) / ctx.eps) * grad
        return grad_z, grad_theta.sum(dim=tuple(range(grad.dim() - 1))), None


class JumpReluSAE(SparseAutoencoder):
    def __init__(self, config: SAEConfig) -> None:
        super().__init__(config)
        start = torch.full((config.d_sae,), float(config.jumprelu_init_threshold))
        self.log_threshold = nn.Parameter(start.log())

    @property
    def threshold(self) -> torch.Tensor:
        return self.log_threshold.exp()

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return _JumpReLU.apply(torch.relu(pre), self.threshold, self.config.jumprelu_bandwidth)

    def sparsity_loss(self, pre: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        steps = _Step.apply(torch.relu(pre), self.threshold, self.config.jumprelu_bandwidth)
        return self.config.l0_coef * steps.sum(dim=-1).mean()
