"""The model: one GPT class with named hook points, and its config.

Owns the forward pass used by training and by every analysis. Imports nothing from other
sparsecircuits packages except the leaf modules `errors` and `validation`.
"""

from sparsecircuits.model.config import ACTIVATION_SPARSITY_SITES, GPTConfig
from sparsecircuits.model.gpt import GPT, abs_topk, next_token_loss
from sparsecircuits.model.hooks import ActivationCache, HookEditError, HookNameError, HookPoint

__all__ = [
    "ACTIVATION_SPARSITY_SITES",
    "GPT",
    "ActivationCache",
    "GPTConfig",
    "HookEditError",
    "HookNameError",
    "HookPoint",
    "abs_topk",
    "next_token_loss",
]
