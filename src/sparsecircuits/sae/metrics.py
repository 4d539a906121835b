"""How well an SAE reconstructs, accumulated over batches so any number of tokens fits.

Each metric is defined once, here, as SAEBench defines it, avoiding the anchors' known slips:
explained variance is measured against the mean activation (not against zero), and the mean
squared error is per element, whatever the batch size.

    mse                 mean over tokens and dimensions of (x - x_hat)^2
    explained_variance  1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2
    l0                  mean number of nonzero latents per token
    dead_fraction       share of latents never nonzero on these tokens
    cosine              mean over tokens of cos(x, x_hat)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ReconstructionTotals:
    """Running sums (float64) from which every metric is computed at the end."""

    tokens: int = 0
    squared_error: float = 0.0
    squared_norm: float = 0.0
    cosine: float = 0.0
    nonzero: float = 0.0
    sum_x: torch.Tensor | None = None
    ever_active: torch.Tensor | None = None
    dims: int = field(default=0)

    def add(self, x: torch.Tensor, x_hat: torch.Tensor, f: torch.Tensor) -> None:
        x, x_hat = x.reshape(-1, x.shape[-1]).double(), x_hat.reshape(-1, x.shape[-1]).double()
        f = f.reshape(-1, f.shape[-1])
        self.tokens += x.shape[0]
        self.dims = x.shape[1]
        self.squared_error += float((x - x_hat).square().sum())
        self.squared_norm += float(x.square().sum())
        self.cosine += float(torch.nn.functional.cosine_similarity(x, x_hat, dim=-1).sum())
        active = f != 0
        self.nonzero += float(active.sum())
        batch_sum = x.sum(dim=0)
        self.sum_x = batch_sum if self.sum_x is None else self.sum_x + batch_sum
        seen = active.any(dim=0)
        self.ever_active = seen if self.ever_active is None else self.ever_active | seen

    def result(self) -> dict[str, float]:
        if not self.tokens:
            raise ValueError("no tokens were measured")
        mean = self.sum_x / self.tokens
        # sum ||x - mean||^2 = sum ||x||^2 - N ||mean||^2
        variance = self.squared_norm - self.tokens * float(mean.square().sum())
        return {
            "mse": self.squared_error / (self.tokens * self.dims),
            "explained_variance": 1.0 - self.squared_error / variance
            if variance > 0
            else float("nan"),
            "l0": self.nonzero / self.tokens,
            "dead_fraction": 1.0 - float(self.ever_active.double().mean()),
            "cosine": self.cosine / self.tokens,
            "tokens": self.tokens,
        }


def reconstruction_metrics(x: torch.Tensor, x_hat: torch.Tensor, f: torch.Tensor) -> dict:
    """The metrics of one batch (see ReconstructionTotals for many)."""
    totals = ReconstructionTotals()
    totals.add(x, x_hat, f)
    return totals.result()
