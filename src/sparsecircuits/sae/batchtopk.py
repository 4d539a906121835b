"""BatchTopK (Bussmann et al. 2024): in training, keep the k x batch largest latents over the
whole batch, so an activation may use more or fewer than k; at inference, keep every latent
above a threshold learnt as a running average of the smallest value training kept."""

from __future__ import annotations

import torch

from sparsecircuits.sae.base import SparseAutoencoder
from sparsecircuits.sae.config import SAEConfig

THRESHOLD_MOMENTUM = 0.99


class BatchTopKSAE(SparseAutoencoder):
    def __init__(self, config: SAEConfig) -> None:
        super().__init__(config)
        self.register_buffer("threshold", torch.zeros(()))

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        values = torch.relu(pre)
        if not self.training:
            return values * (values > self.threshold)
        flat = values.flatten()
        kept = min(flat.numel(), self.config.k * (flat.numel() // values.shape[-1]))
        top = flat.topk(kept)
        f = torch.zeros_like(flat).scatter(0, top.indices, top.values).view_as(values)
        with torch.no_grad():
            positive = top.values[top.values > 0]
            if positive.numel():
                smallest = positive.min()
                self.threshold.mul_(THRESHOLD_MOMENTUM).add_((1 - THRESHOLD_MOMENTUM) * smallest)
        return f
