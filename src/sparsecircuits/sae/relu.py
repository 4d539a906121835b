"""ReLU + L1, the seed's formula: f = ReLU(pre), penalty l1_coef * sum_i f_i ||W_dec_i||.

Weighting each latent's L1 by its decoder norm (Anthropic's 2024 update) keeps the penalty
from being dodged by shrinking f and growing the decoder, without constraining the decoder."""

from __future__ import annotations

import torch

from sparsecircuits.sae.base import SparseAutoencoder


class ReluSAE(SparseAutoencoder):
    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre)

    def sparsity_loss(self, pre: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return self.config.l1_coef * (f * self.W_dec.norm(dim=1)).sum(dim=-1).mean()
