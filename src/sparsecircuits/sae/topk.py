"""TopK (Gao et al. 2024): keep each activation's k largest latents (after a ReLU), zero the
rest. The sparsity is exact, so there is no penalty; the decoder rows are kept at unit norm.
Only the k active rows of the decoder are read (an embedding bag over their indices): the
dense product would multiply d_sae - k zeros per activation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sparsecircuits.sae.base import SparseAutoencoder


def keep_top_k(values: torch.Tensor, k: int) -> torch.Tensor:
    """`values` with all but the k largest of each row set to zero."""
    top = values.topk(k, dim=-1)
    return torch.zeros_like(values).scatter(-1, top.indices, top.values)


class _TopKEncode(torch.autograd.Function):
    """The k largest of ReLU(x @ W + b) per row, values and latent indices. Its backward reads
    only the k active columns: the dense one would multiply the d_sae - k zero gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, k: int):  # noqa: ANN001, ANN205
        with torch.no_grad():
            top = torch.relu(x @ weight + bias).topk(k, dim=-1)
        ctx.save_for_backward(x, weight, top.indices, top.values > 0)
        ctx.mark_non_differentiable(top.indices)
        return top.values, top.indices

    @staticmethod
    def backward(ctx, grad_values: torch.Tensor, _grad_indices: torch.Tensor):  # noqa: ANN001, ANN205
        x, weight, indices, active = ctx.saved_tensors
        grad = (grad_values * active).flatten()
        rows = torch.arange(x.shape[0], device=x.device).repeat_interleave(indices.shape[1])
        columns = indices.flatten()
        # Valid by construction (k distinct columns a row), so the invariant check is skipped.
        sparse = torch.sparse_coo_tensor(
            torch.stack([rows, columns]),
            grad,
            (x.shape[0], weight.shape[1]),
            check_invariants=False,
        )
        grad_x = torch.sparse.mm(sparse, weight.t()) if ctx.needs_input_grad[0] else None
        grad_weight = torch.sparse.mm(sparse.t(), x).t() if ctx.needs_input_grad[1] else None
        grad_bias = torch.zeros_like(weight[0]).index_add_(0, columns, grad)
        return grad_x, grad_weight, grad_bias, None


class TopKSAE(SparseAutoencoder):
    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return keep_top_k(torch.relu(pre), self.config.k)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f, reconstruction = self.sparse_pass(x)
        return reconstruction * self.config.output_scale, f

    def losses(self, x: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        f, reconstruction = self.sparse_pass(x)
        error = reconstruction - target / self.config.output_scale
        loss = error.square().sum(dim=-1).mean()
        return {"loss": loss, "reconstruction": loss, "sparsity": loss.new_zeros(()), "f": f}

    def sparse_pass(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f and the reconstruction before the output scale, touching only the k active
        latents' encoder columns (in the backward pass) and decoder rows."""
        centred = x.reshape(-1, x.shape[-1]) / self.config.input_scale
        if not self.config.is_transcoder:
            centred = centred - self.b_dec
        values, indices = _TopKEncode.apply(centred, self.W_enc, self.b_enc, self.config.k)
        f = torch.zeros(len(centred), self.config.d_sae, dtype=values.dtype, device=values.device)
        f = f.scatter(-1, indices, values)
        decoded = F.embedding_bag(indices, self.W_dec, per_sample_weights=values, mode="sum")
        shape = x.shape[:-1]
        return f.reshape(*shape, -1), decoded.reshape(*shape, -1) + self.b_dec
