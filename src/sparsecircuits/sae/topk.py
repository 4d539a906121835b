"""TopK (Gao et al. 2024): keep each activation's k largest latents (after a ReLU), zero the
rest. The sparsity is exact, so there is no penalty; the decoder rows are kept at unit norm."""

from __future__ import annotations

import torch

from sparsecircuits.sae.base import SparseAutoencoder


def keep_top_k(values: torch.Tensor, k: int) -> torch.Tensor:
    """`values` with all but the k largest of each row set to zero."""
    top = values.topk(k, dim=-1)
    return torch.zeros_like(values).scatter(-1, top.indices, top.values)


class TopKSAE(SparseAutoencoder):
    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return keep_top_k(torch.relu(pre), self.config.k)
