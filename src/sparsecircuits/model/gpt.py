"""The one GPT: trained, analysed and pruned through the same forward pass.

Pre-norm GPT-2 style with RMSNorm, untied embeddings, GELU MLP and small heads (spec
section 1). LayerNorm, tied embeddings, other activations and wider attention are options, so
that imported models (GPT-2, OpenAI's circuit-sparsity release) run through this same class.
Every intermediate value an analysis may need passes through a named HookPoint; the table of
names is in docs/hooks.md.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sparsecircuits.model.config import GPTConfig
from sparsecircuits.model.hooks import ActivationCache, HookedModule, HookNameError, HookPoint


def abs_topk(x: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k entries of largest magnitude along the last axis, zero the rest.

    Multiplying by a threshold mask is about a third faster on CPU than scattering the top-k
    values, forward and backward; exact ties at the threshold (rare in floats) may keep a few more.
    """
    if k >= x.shape[-1]:
        return x
    magnitude = x.detach().abs()
    threshold = magnitude.topk(k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)
    return x * (magnitude >= threshold)


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in nats, computed in float32 whatever the autocast dtype."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


class ActivationSparsity(nn.Module):
    """AbsTopK at one site; the identity where the model has no activation sparsity."""

    def __init__(self, config: GPTConfig, site: str) -> None:
        super().__init__()
        self.k = config.sparsity_k(site)
        # The site's input before the top-k chooses (only where there is a top-k, so a dense
        # model's hook table has no point that does nothing): an edit here changes the choice.
        self.hook_in = HookPoint() if self.k is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.k is None else abs_topk(self.hook_in(x), self.k)


class Norm(nn.Module):
    """RMSNorm (trained models) or LayerNorm with a bias (GPT-2), as the config says."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(config.d_model))
        self.bias = nn.Parameter(torch.zeros(config.d_model)) if config.norm == "layer" else None
        self.eps = config.norm_eps
        # RMSNorm's divisor sqrt(mean(x^2) + eps), [..., 1]: every channel of the stream
        # reaches every output channel through it.
        self.hook_scale = HookPoint() if config.norm == "rms" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is not None:
            return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
        if not self.hook_scale.active:  # the fused kernel, unless the scale is read or edited
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        # Half precision is widened for the sum of squares; float64 stays float64.
        wide = x.to(torch.promote_types(x.dtype, torch.float32))
        scale = self.hook_scale(wide.square().mean(dim=-1, keepdim=True).add(self.eps).sqrt())
        return (wide / scale).to(x.dtype) * self.weight


ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),  # GPT-2's "gelu_new"
    "relu": F.relu,
}


class Attention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        d, inner = config.d_model, config.d_attn
        self.n_head, self.d_head = config.n_head, config.d_head
        # Separate q/k/v projections so every channel is its own prunable, sparsifiable row.
        self.q_proj, self.k_proj = nn.Linear(d, inner), nn.Linear(d, inner)
        self.v_proj, self.out_proj = nn.Linear(d, inner), nn.Linear(inner, d)
        self.sink_logit = nn.Parameter(torch.zeros(self.n_head)) if config.attention_sink else None
        self.sparsify_q, self.sparsify_k, self.sparsify_v = (
            ActivationSparsity(config, site) for site in ("q", "k", "v")
        )
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()
        self.hook_pattern = HookPoint()  # [batch, head, query, key]
        self.hook_z = HookPoint()  # per-head mixed values [batch, pos, head, d_head]
        self.hook_result = HookPoint()  # per-head output [batch, pos, head, d_model]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, n_pos, _ = x.shape
        split = (batch, n_pos, self.n_head, self.d_head)
        q = self.hook_q(self.sparsify_q(self.q_proj(x)).view(split))
        k = self.hook_k(self.sparsify_k(self.k_proj(x)).view(split))
        v = self.hook_v(self.sparsify_v(self.v_proj(x)).view(split))
        z = self.hook_z(self.mix_values(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)))
        if not self.hook_result.active:
            return self.out_proj(z.reshape(batch, n_pos, -1))
        # Per-head outputs cost a d_model-wide tensor per head: build them only when asked,
        # as one batched matmul over heads ([head, b*p, d_head] @ [head, d_head, d_model]).
        weight = self.out_proj.weight.view(-1, self.n_head, self.d_head).permute(1, 2, 0)
        per_head = torch.bmm(z.reshape(-1, self.n_head, self.d_head).transpose(0, 1), weight)
        result = per_head.view(self.n_head, batch, n_pos, -1).permute(1, 2, 0, 3)
        edited = self.hook_result(result)
        if edited is result:  # only read: the fused projection gives the same sum, faster
            return self.out_proj(z.reshape(batch, n_pos, -1))
        return edited.sum(dim=2) + self.out_proj.bias

    def mix_values(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Causal attention of [batch, head, pos, d_head] inputs, returned as [b, pos, h, d]."""
        if self.hook_pattern.active:
            z = self.hook_pattern(self.pattern(q, k)) @ v
        elif self.sink_logit is None:
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            # The sink is a zero key and zero value every query sees, with a learned logit.
            n_pos = q.shape[2]
            zeros = q.new_zeros(q.shape[0], self.n_head, 1, self.d_head)
            mask = q.new_full((n_pos, n_pos + 1), float("-inf")).triu(1)
            mask = mask.expand(self.n_head, -1, -1).clone()
            mask[:, :, -1] = self.sink_logit.view(-1, 1)
            k, v = torch.cat([k, zeros], dim=2), torch.cat([v, zeros], dim=2)
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.unsqueeze(0))
        return z.transpose(1, 2)

    def pattern(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        n_pos = q.shape[2]
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.d_head)
        causal = torch.ones(n_pos, n_pos, dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
        if self.sink_logit is None:
            return scores.softmax(dim=-1)
        sink = self.sink_logit.view(1, -1, 1, 1).expand(*scores.shape[:3], 1)
        return torch.cat([scores, sink.to(scores.dtype)], dim=-1).softmax(dim=-1)[..., :-1]


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.d_mlp)
        self.proj = nn.Linear(config.d_mlp, config.d_model)
        self.activation = ACTIVATIONS[config.activation]
        self.sparsify_neurons = ActivationSparsity(config, "mlp_neuron")
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()  # the neurons, after GELU (and AbsTopK)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        neurons = self.hook_post(self.sparsify_neurons(self.activation(self.hook_pre(self.fc(x)))))
        return self.proj(neurons)


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.norm_attn, self.norm_mlp = Norm(config), Norm(config)
        self.attn, self.mlp = Attention(config), MLP(config)
        (
            self.sparsify_attn_in,
            self.sparsify_attn_out,
            self.sparsify_mlp_in,
            self.sparsify_mlp_out,
            self.sparsify_resid_mid,
            self.sparsify_resid_post,
        ) = (
            ActivationSparsity(config, site)
            for site in ("attn_in", "attn_out", "mlp_in", "mlp_out", "resid_mid", "resid_post")
        )
        self.hook_resid_pre, self.hook_resid_mid, self.hook_resid_post = (
            HookPoint() for _ in range(3)
        )
        self.hook_attn_in, self.hook_attn_out = HookPoint(), HookPoint()
        self.hook_mlp_in, self.hook_mlp_out = HookPoint(), HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.hook_resid_pre(x)
        attn_in = self.hook_attn_in(self.sparsify_attn_in(self.norm_attn(x)))
        x = x + self.hook_attn_out(self.sparsify_attn_out(self.attn(attn_in)))
        x = self.hook_resid_mid(self.sparsify_resid_mid(x))
        mlp_in = self.hook_mlp_in(self.sparsify_mlp_in(self.norm_mlp(x)))
        x = x + self.hook_mlp_out(self.sparsify_mlp_out(self.mlp(mlp_in)))
        return self.hook_resid_post(self.sparsify_resid_post(x))


class GPT(HookedModule):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        self.wpe = nn.Embedding(config.n_ctx, config.d_model) if config.learned_positions else None
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm_final = Norm(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size)
        if config.tied_embeddings:
            self.lm_head.weight = self.wte.weight
            self.register_load_state_dict_pre_hook(self._fill_tied_weight)
        self.bigram = (
            nn.Embedding(config.vocab_size, config.vocab_size) if config.bigram_table else None
        )
        self.hook_embed = HookPoint()
        self.hook_pos_embed = HookPoint() if config.learned_positions else None
        self.hook_final_norm, self.hook_logits = HookPoint(), HookPoint()
        self.reset_parameters()
        self.setup_hook_points()

    def reset_parameters(self) -> None:
        # GPT-2 initialisation; residual writers shrink with depth so the stream stays O(1).
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, param in self.named_parameters():
            if name.endswith("bias") or name.endswith("sink_logit"):
                nn.init.zeros_(param)
            elif "norm" in name:
                nn.init.ones_(param)
            elif name == "bigram.weight":
                nn.init.zeros_(param)
            elif name.endswith(("out_proj.weight", "mlp.proj.weight")):
                nn.init.normal_(param, std=residual_std)
            else:
                nn.init.normal_(param, std=0.02)

    def state_dict(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        """As nn.Module's, but a tied unembedding is stored once, as `wte.weight`."""
        weights = super().state_dict(*args, **kwargs)
        if self.config.tied_embeddings:
            prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "")
            weights.pop(f"{prefix}lm_head.weight", None)
        return weights

    def _fill_tied_weight(self, module: nn.Module, weights: dict, prefix: str, *_) -> None:
        weights.setdefault(f"{prefix}lm_head.weight", weights.get(f"{prefix}wte.weight"))

    def forward(
        self,
        tokens: torch.Tensor,
        logits_at: torch.Tensor | None = None,
        stop_at_layer: int | None = None,
    ) -> torch.Tensor:
        """Logits [batch, pos, vocab] for token ids [batch, pos].

        With `logits_at` (one position per sequence, [batch]) only those positions are
        unembedded and the result is [batch, vocab]: task metrics need just the last prompt
        token, and the unembedding is a large share of a small model's compute. With
        `stop_at_layer` only the blocks before it run and the residual stream after them is
        returned, [batch, pos, d_model]: caching an early layer need not pay for the rest.
        """
        n_pos = tokens.shape[1]
        if n_pos > self.config.n_ctx:
            raise ValueError(f"sequence of {n_pos} tokens exceeds n_ctx {self.config.n_ctx}")
        x = self.hook_embed(self.wte(tokens))
        if self.wpe is not None:
            x = x + self.hook_pos_embed(self.wpe(torch.arange(n_pos, device=tokens.device)))
        for block in self.blocks[:stop_at_layer]:
            x = block(x)
        if stop_at_layer is not None:
            return x
        if logits_at is not None:
            rows = torch.arange(tokens.shape[0], device=tokens.device)
            x, tokens = x[rows, logits_at], tokens[rows, logits_at]
        logits = self.lm_head(self.hook_final_norm(self.norm_final(x)))
        if self.bigram is not None:
            logits = logits + self.bigram(tokens)
        return self.hook_logits(logits)

    def loss(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy (nats) of the model on `tokens`."""
        return next_token_loss(self(tokens), targets)

    def run_with_cache(
        self,
        tokens: torch.Tensor,
        names: str | list[str] = "*",
        *,
        stop_at_layer: int | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[torch.Tensor, ActivationCache]:
        """Logits (or, with `stop_at_layer`, the residual stream entering that layer) and the
        activations named (globs allowed); only what is named is kept."""
        names = self.resolve_hook_names(names)
        if stop_at_layer is not None:
            late = [name for name in names if name.startswith("blocks.")]
            late = [name for name in late if int(name.split(".")[1]) >= stop_at_layer]
            late += [name for name in names if not name.startswith(("blocks.", "hook_embed"))]
            late = [name for name in late if name != "hook_pos_embed"]
            if late and names != self.hook_names:  # "*" with a stop means "all that runs"
                raise HookNameError(
                    f"{late[0]} is not computed with stop_at_layer={stop_at_layer}: only the "
                    f"embeddings and blocks 0..{stop_at_layer - 1} run"
                )
        with self.cache(names, device=device, dtype=dtype) as store:
            output = self(tokens, stop_at_layer=stop_at_layer)
        return output, store

    @torch.no_grad()
    @torch.no_grad()
    def generate(
        self,
        tokens: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Continue a [batch, pos] prompt: greedily at temperature 0, else sampled from the
        softmax of logits / temperature over the `top_k` likeliest tokens (all if None),
        drawn from `generator` (on the model's device) for repeatable samples."""
        for _ in range(max_new_tokens):
            logits = self(tokens[:, -self.config.n_ctx :])[:, -1].float()
            if temperature <= 0:
                next_token = logits.argmax(dim=-1, keepdim=True)
            else:
                if top_k is not None and top_k < logits.shape[-1]:
                    floor = logits.topk(top_k, dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < floor, -math.inf)
                probabilities = (logits / temperature).softmax(dim=-1)
                next_token = torch.multinomial(probabilities, 1, generator=generator)
            tokens = torch.cat([tokens, next_token], dim=1)
        return tokens

    def weight_sparsity_groups(self) -> list[tuple[str, nn.Parameter, str | None]]:
        """Parameters that weight sparsity prunes, with the axis that keeps >= 4 per neuron.

        "rows": every output channel keeps its strongest inputs (q/k/v, MLP input);
        "cols": every input channel keeps its strongest outputs (attention and MLP outputs).
        Norm gains, the bigram table and attention sinks stay dense.
        """
        groups = []
        for name, param in self.named_parameters():
            if "norm" in name or name.startswith("bigram") or name.endswith("sink_logit"):
                continue
            rule = None
            if param.dim() == 2 and name.endswith(
                ("q_proj.weight", "k_proj.weight", "v_proj.weight", "fc.weight")
            ):
                rule = "rows"
            elif param.dim() == 2 and name.endswith(("out_proj.weight", "mlp.proj.weight")):
                rule = "cols"
            groups.append((name, param, rule))
        return groups
