"""What every SAE architecture shares: the encoder and decoder, and how a batch is scored."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from sparsecircuits.sae.config import SAEConfig


class SparseAutoencoder(nn.Module, ABC):
    """f = activation(pre), pre = (x / input_scale - b_dec) @ W_enc + b_enc (a transcoder does not
    subtract b_dec: its input and output live in different spaces); x_hat = (f @ W_dec + b_dec)
    * output_scale. Subclasses choose the activation and the sparsity penalty."""

    def __init__(self, config: SAEConfig) -> None:
        super().__init__()
        self.config = config
        decoder = torch.randn(config.d_sae, config.d_out)
        decoder /= decoder.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(decoder)
        # The encoder starts as the decoder's transpose where the widths allow: each latent
        # first reads the direction it writes.
        encoder = (
            decoder.T.clone()
            if config.d_in == config.d_out
            else torch.randn(config.d_in, config.d_sae) / config.d_in**0.5
        )
        self.W_enc = nn.Parameter(encoder)
        self.b_enc = nn.Parameter(torch.zeros(config.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(config.d_out))

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        x = x / self.config.input_scale
        if not self.config.is_transcoder:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    @abstractmethod
    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """The latents from the pre-activations: where the architectures differ."""

    def sparsity_loss(self, pre: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """The penalty added to the reconstruction loss (zero where the activation itself
        enforces sparsity)."""
        return pre.new_zeros(())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.pre_activations(x))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return (f @ self.W_dec + self.b_dec) * self.config.output_scale

    def latents_and_reconstruction(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f and the reconstruction before the output scale, f @ W_dec + b_dec; an architecture
        that knows which latents are active may decode only those."""
        f = self.activation(pre)
        return f, f @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f, reconstruction = self.latents_and_reconstruction(self.pre_activations(x))
        return reconstruction * self.config.output_scale, f

    def losses(self, x: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstruction (mean squared error per activation, summed over its dimensions, in
        the scaled space) and sparsity terms of one batch; "loss" is what training minimises."""
        pre = self.pre_activations(x)
        f, reconstruction = self.latents_and_reconstruction(pre)
        error = reconstruction - target / self.config.output_scale
        reconstruction = error.square().sum(dim=-1).mean()
        sparsity = self.sparsity_loss(pre, f)
        return {
            "loss": reconstruction + sparsity,
            "reconstruction": reconstruction,
            "sparsity": sparsity,
            "f": f,
        }

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        """Unit-norm decoder rows (after each step, for architectures whose penalty does not see
        the decoder's norms)."""
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)
