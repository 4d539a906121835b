"""The registry of SAE architectures: name -> class, one file each."""

from __future__ import annotations

from sparsecircuits.sae.base import SparseAutoencoder
from sparsecircuits.sae.batchtopk import BatchTopKSAE
from sparsecircuits.sae.config import SAEConfig
from sparsecircuits.sae.jumprelu import JumpReluSAE
from sparsecircuits.sae.relu import ReluSAE
from sparsecircuits.sae.topk import TopKSAE

ARCHITECTURES: dict[str, type[SparseAutoencoder]] = {
    "relu": ReluSAE,
    "topk": TopKSAE,
    "batchtopk": BatchTopKSAE,
    "jumprelu": JumpReluSAE,
}


def build_sae(config: SAEConfig) -> SparseAutoencoder:
    return ARCHITECTURES[config.arch](config)
