"""Sparse autoencoders and transcoders on any hook point of any model here.

An SAE reads the activations at one hook and rewrites them as a sparse sum of learned
directions: f = encode(x) (few latents nonzero), x_hat = f @ W_dec + b_dec. A transcoder reads
one hook and reconstructs another (e.g. an MLP's input -> its output). One file per
architecture behind a small registry (architectures.py): ReLU + L1 (relu.py), TopK (topk.py),
BatchTopK (batchtopk.py), JumpReLU (jumprelu.py). config.py: what an SAE is, saved as JSON
beside its safetensors weights (files.py); metrics.py: how well it reconstructs; splice.py: an
SAE spliced into its model, its latents a hook point (`H.hook_sae_latents`) that every
analysis reads and edits like the model's own.

Imports only model, loading and data, so circuits, interp and explain may splice SAEs in.
"""

from sparsecircuits.sae.architectures import ARCHITECTURES, SparseAutoencoder, build_sae
from sparsecircuits.sae.config import SAEConfig
from sparsecircuits.sae.files import load_sae, save_sae
from sparsecircuits.sae.metrics import reconstruction_metrics

__all__ = [
    "ARCHITECTURES",
    "SAEConfig",
    "SparseAutoencoder",
    "build_sae",
    "load_sae",
    "reconstruction_metrics",
    "save_sae",
]
