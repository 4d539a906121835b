"""The logit lens and the tuned lens: the residual stream after every layer read as a
next-token distribution.

The logit lens unembeds each layer's residual stream with the model's own final norm,
unembedding and bigram table, so its reading of the last layer is exactly the model's logits.
The tuned lens first passes each layer through a learned affine translator, trained so that its
reading matches the model's final distribution (KL over corpus activations from the activation
stream); the last layer's translator is the identity. Layers are "embed" (the stream entering
block 0) and then the stream leaving each block. Both lenses are read the same three ways:
`logit_lens` (every log-probability), `lens_readout` (only the probability and rank of chosen
targets and the top tokens, one layer at a time) and `task_lens` (answer margins of task pairs).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from sparsecircuits.errors import UserError
from sparsecircuits.files import atomic_path, write_json_atomic
from sparsecircuits.loading import Run
from sparsecircuits.loading.activations import iter_activations
from sparsecircuits.loading.memory import FLOAT_BYTES, forward_bytes, require_memory
from sparsecircuits.loading.weights_file import load_weights, save_weights
from sparsecircuits.model import GPT, GPTConfig
from sparsecircuits.tasks import TaskBatch, logit_margins
from sparsecircuits.validation import load_json

WEIGHTS_FILE = "tuned_lens.safetensors"
REPORT_FILE = "tuned_lens.json"
FORMAT = "sparsecircuits.tuned_lens/1"


def layer_hooks(model: GPT) -> list[str]:
    """The residual stream at every lens layer, embed first."""
    # "embed" reads the stream entering block 0, not hook_embed: with learned positions the
    # stream is the token embedding plus the position embedding.
    return ["blocks.0.hook_resid_pre"] + [
        f"blocks.{layer}.hook_resid_post" for layer in range(model.config.n_layer)
    ]


def layer_labels(model: GPT) -> list[str]:
    return ["embed"] + [f"layer {layer}" for layer in range(model.config.n_layer)]


class TunedLens(nn.Module):
    """One affine translator (d_model x d_model, started at the identity) per layer but the
    last, whose stream the model itself unembeds."""

    def __init__(self, n_layer: int, d_model: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.eye(d_model).repeat(n_layer, 1, 1))  # [n_layer, d, d]
        self.bias = nn.Parameter(torch.zeros(n_layer, d_model))

    @classmethod
    def from_model(cls, model: GPT) -> TunedLens:
        """An untrained lens (every translator the identity) on the model's device."""
        device = next(model.parameters()).device
        return cls(model.config.n_layer, model.config.d_model).to(device)

    @property
    def n_layer(self) -> int:
        return self.weight.shape[0]

    def translate(self, layer: int, stream: torch.Tensor) -> torch.Tensor:
        """The stream [..., d] of lens layer `layer` (0: embed) as the last layer would hold it."""
        if layer >= self.n_layer:
            return stream
        return F.linear(stream, self.weight[layer], self.bias[layer])


def unembed(model: GPT, stream: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Logits [..., vocab] of a residual stream [..., d] whose current tokens are `tokens`."""
    logits = model.lm_head(model.norm_final(stream))
    if model.bigram is not None:  # the table adds the current token's row, as in the model
        logits = logits + model.bigram(tokens)
    return logits


def streams_bytes(config: GPTConfig, rows: int, positions: int, logit_positions: int) -> int:
    """Memory of `layer_logits` on `rows` sequences of `positions` tokens: the forward pass,
    the stream after every layer, and one layer's logits at `logit_positions` per row."""
    streams = (config.n_layer + 1) * rows * positions * config.d_model * FLOAT_BYTES
    return streams + forward_bytes(config, rows, positions, logit_positions=logit_positions)


def residual_streams(model: GPT, tokens: torch.Tensor) -> torch.Tensor:
    """[layers + 1, batch, pos, d] the stream at every lens layer; the unembedding never runs."""
    hooks = layer_hooks(model)
    _, cache = model.run_with_cache(tokens, hooks, stop_at_layer=model.config.n_layer)
    return torch.stack([cache[name] for name in hooks])


def layer_logits(
    model: GPT,
    tokens: torch.Tensor,
    lens: TunedLens | None = None,
    positions: torch.Tensor | None = None,
) -> Iterator[torch.Tensor]:
    """The lens logits of each layer in turn, embed first: [batch, pos, vocab], or with
    `positions` (one per sequence, [batch]) only those positions, [batch, vocab]."""
    streams = residual_streams(model, tokens)
    if positions is not None:
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        streams, tokens = streams[:, rows, positions], tokens[rows, positions]
    for layer, stream in enumerate(streams):
        if lens is not None:
            stream = lens.translate(layer, stream)
        yield unembed(model, stream, tokens)


@torch.no_grad()
def logit_lens(model: GPT, tokens: torch.Tensor, lens: TunedLens | None = None) -> torch.Tensor:
    """[layers + 1, batch, pos, vocab] log-probabilities of every layer (the tuned lens if
    `lens` is given); the last layer is the model's own distribution."""
    return torch.stack(
        [logits.float().log_softmax(-1) for logits in layer_logits(model, tokens, lens)]
    )


@dataclass
class LensReadout:
    """What a lens says at each layer, without keeping a vocabulary per layer."""

    top_tokens: torch.Tensor  # [layers + 1, *where, k] the lens's most likely tokens
    top_probability: torch.Tensor  # [layers + 1, *where, k]
    probability: torch.Tensor | None = None  # [layers + 1, *where] of each target
    rank: torch.Tensor | None = None  # [layers + 1, *where] of each target; 0 is the top


@torch.no_grad()
def lens_readout(
    model: GPT,
    tokens: torch.Tensor,
    targets: torch.Tensor | None = None,
    lens: TunedLens | None = None,
    positions: torch.Tensor | None = None,
    k: int = 5,
) -> LensReadout:
    """Top-k tokens and the probability and rank of `targets` at every layer, one layer's
    vocabulary at a time. `where` is [batch, pos], or [batch] with `positions`; `targets` has
    that shape."""
    tops, top_probabilities, probabilities, ranks = [], [], [], []
    for logits in layer_logits(model, tokens, lens, positions):
        log_probs = logits.float().log_softmax(-1)
        top = log_probs.topk(min(k, log_probs.shape[-1]), dim=-1)
        tops.append(top.indices)
        top_probabilities.append(top.values.exp())
        if targets is not None:
            target = log_probs.gather(-1, targets.unsqueeze(-1))
            probabilities.append(target.squeeze(-1).exp())
            ranks.append((log_probs > target).sum(-1))
    return LensReadout(
        torch.stack(tops),
        torch.stack(top_probabilities),
        torch.stack(probabilities) if targets is not None else None,
        torch.stack(ranks) if targets is not None else None,
    )


@dataclass
class TaskLens:
    logit_diff: torch.Tensor  # [layers + 1] mean logit(own answer) - logit(partner's answer)
    accuracy: torch.Tensor  # [layers + 1] share of prompts whose own answer wins
    n_prompts: int


@torch.no_grad()
def task_lens(model: GPT, pairs: TaskBatch, lens: TunedLens | None = None) -> TaskLens:
    """Per layer, at each prompt's last token, how far the lens leans to the prompt's answer.

    Both prompts of every pair count, as in the task metrics: the clean prompt scores
    clean answer - corrupted answer, the corrupted prompt the reverse (`tasks.logit_margins`
    of each row's correct and wrong token).
    """
    rows, positions = pairs.tokens.shape
    needed = streams_bytes(model.config, rows, positions, logit_positions=1)
    device = str(next(model.parameters()).device)
    require_memory(needed, f"--n {pairs.n_pairs} pairs of {positions} tokens", device)
    tokens, last = pairs.tokens.to(device), pairs.last.to(device)
    margins = torch.stack(
        [
            logit_margins(logits, pairs.correct, pairs.wrong).float()
            for logits in layer_logits(model, tokens, lens, last)
        ]
    )  # [layers + 1, 2n]
    return TaskLens(
        margins.mean(dim=1).cpu(), (margins > 0).float().mean(dim=1).cpu(), margins.shape[1]
    )


# Training the tuned lens: KL(final || lens) over windows of the run's own training text.


@dataclass
class TunedLensReport:
    """What `tuned_lens.json` says beside the weights."""

    layers: list[str]
    steps: int
    tokens_trained: int
    seed: int
    lr: float
    held_out_tokens: int
    kl_logit_lens: list[float]  # per layer, nats/token on held-out text
    kl_tuned_lens: list[float]
    seconds: float = 0.0
    format: str = field(default=FORMAT)


@contextlib.contextmanager
def frozen(model: GPT) -> Iterator[None]:
    """The model's parameters out of autograd for the block: only the lens learns."""
    flags = [(param, param.requires_grad) for param in model.parameters()]
    for param, _ in flags:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


@torch.no_grad()
def final_log_probs(model: GPT, streams: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The model's own log-probabilities, from the last layer of streams [layers + 1, ..., d]."""
    return unembed(model, streams[-1], tokens).float().log_softmax(-1)


def kl_to_final(
    model: GPT, stream: torch.Tensor, tokens: torch.Tensor, final: torch.Tensor
) -> torch.Tensor:
    """Mean KL(final || lens reading of `stream`) in nats per token."""
    reading = unembed(model, stream, tokens).float().log_softmax(-1)
    return F.kl_div(reading, final, log_target=True, reduction="sum") / tokens.numel()


def train_tuned_lens(
    run: Run,
    tokens: int | None = None,
    steps: int = 250,
    seed: int = 0,
    lr: float = 1e-2,
    held_out_tokens: int | None = None,
    progress: bool = False,
) -> tuple[TunedLens, TunedLensReport]:
    """A tuned lens for the model in `run`, trained with Adam for `steps` steps on `tokens`
    tokens (default 8 windows of the context per step) drawn at random from its training
    split, then measured against the logit lens on held-out text."""
    n_ctx = run.model_config.n_ctx
    tokens = tokens or steps * 8 * n_ctx
    if steps < 1 or not lr > 0:
        raise UserError(f"steps must be at least 1 and lr above 0, got {steps} and {lr}")
    windows_per_step = tokens // (steps * n_ctx)
    if windows_per_step < 1:
        raise UserError(
            f"{tokens:,} tokens over {steps} steps is less than one window of {n_ctx} tokens a "
            f"step; give at least {steps * n_ctx:,} tokens or fewer steps"
        )
    model = run.model
    what = f"--tokens {tokens} over --steps {steps} ({windows_per_step:,} windows a step)"
    needed = tuned_lens_step_bytes(model.config, windows_per_step * n_ctx)
    require_memory(needed, what, str(next(model.parameters()).device))
    lens = TunedLens.from_model(model)
    optimizer = torch.optim.Adam(lens.parameters(), lr=lr)
    # A linear decay to zero: late steps settle the translators instead of jumping around.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    hooks, n_tokens = layer_hooks(model), steps * windows_per_step * n_ctx
    stream = iter_activations(
        run, hooks, n_tokens, windows_per_step, split="train", order="random", seed=seed
    )
    started, trained = time.perf_counter(), 0
    bar = tqdm(total=n_tokens, unit="tok", unit_scale=True, desc="tuned lens", disable=not progress)
    with bar, frozen(model):
        for batch in stream:
            kl = train_step(model, lens, optimizer, batch.tokens, batch.activations)
            schedule.step()
            trained += batch.tokens.numel()
            bar.update(batch.tokens.numel())
            bar.set_postfix(kl=f"{kl:.3f}")
    if trained == 0:
        raise UserError(f"the training split of {run.path} has no window of {n_ctx} tokens")
    held_out = held_out_tokens or 16 * n_ctx
    kl_logit, kl_tuned, measured = held_out_kl(run, lens, held_out)
    report = TunedLensReport(
        layers=layer_labels(model),
        steps=steps,
        tokens_trained=trained,
        seed=seed,
        lr=lr,
        held_out_tokens=measured,
        kl_logit_lens=kl_logit,
        kl_tuned_lens=kl_tuned,
        seconds=round(time.perf_counter() - started, 2),
    )
    return lens, report


def tuned_lens_step_bytes(config: GPTConfig, tokens: int) -> int:
    """Memory of one training step on `tokens` tokens: the streams the activation stream
    caches (on the CPU, then again on the lens's device), the model's final log-probabilities
    and one layer's lens logits with their log-softmax and gradient."""
    windows = tokens // config.n_ctx
    streams = streams_bytes(config, windows, config.n_ctx, logit_positions=0)
    return 2 * streams + 4 * tokens * config.vocab_size * FLOAT_BYTES


def train_step(
    model: GPT,
    lens: TunedLens,
    optimizer: torch.optim.Optimizer,
    tokens: torch.Tensor,
    activations: dict[str, torch.Tensor],
) -> float:
    """One Adam step on a batch of the activation stream; the mean KL over translated layers."""
    device = lens.weight.device
    tokens = tokens.to(device)
    streams = torch.stack([activations[name] for name in layer_hooks(model)]).to(device)
    final = final_log_probs(model, streams, tokens)
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for layer in range(lens.n_layer):  # backward per layer: one vocabulary's logits at a time
        loss = kl_to_final(model, lens.translate(layer, streams[layer]), tokens, final)
        loss.backward()
        total += loss.item()
    optimizer.step()
    return total / lens.n_layer


@torch.no_grad()
def held_out_kl(
    run: Run, lens: TunedLens, n_tokens: int, batch_size: int = 8
) -> tuple[list[float], list[float], int]:
    """Per layer, mean KL(final || lens) in nats/token of the logit lens and of `lens`, over
    the first `n_tokens` tokens of the held-out split; and the tokens measured."""
    model = run.model
    device = next(model.parameters()).device
    hooks, layers = layer_hooks(model), model.config.n_layer + 1
    sums = torch.zeros(2, layers)  # rows: logit lens, tuned lens
    measured = 0
    for batch in iter_activations(run, hooks, n_tokens, batch_size, split="val"):
        tokens = batch.tokens.to(device)
        streams = torch.stack([batch.activations[name] for name in hooks]).to(device)
        final = final_log_probs(model, streams, tokens)
        for layer, plain in enumerate(streams):
            for row, stream in enumerate((plain, lens.translate(layer, plain))):
                kl = kl_to_final(model, stream, tokens, final)
                sums[row, layer] += float(kl) * tokens.numel()
        measured += tokens.numel()
    if measured == 0:
        raise UserError(f"the held-out split of {run.path} has no window of a full context")
    logit_kl, tuned_kl = (sums / measured).tolist()
    return logit_kl, tuned_kl, measured


# On disk: beside the model in the checkpoint folder, as safetensors weights + a JSON report.


def tuned_lens_paths(run: Run) -> tuple[Path, Path]:
    return run.path / WEIGHTS_FILE, run.path / REPORT_FILE


def save_tuned_lens(run: Run, lens: TunedLens, report: TunedLensReport) -> list[Path]:
    """Write the lens and its report into the run's checkpoint folder, each atomically."""
    weights_path, report_path = tuned_lens_paths(run)
    with atomic_path(weights_path) as temporary:
        save_weights({"weight": lens.weight, "bias": lens.bias}, temporary)
    # The report last: a lens whose report exists finished writing.
    write_json_atomic(report_path, asdict(report))
    return [weights_path, report_path]


def load_tuned_lens(run: Run) -> TunedLens:
    """The tuned lens saved beside the model in `run`; a UserError if there is none or it was
    trained for a model of another shape."""
    weights_path, _ = tuned_lens_paths(run)
    if not weights_path.is_file():
        raise UserError(
            f"{run.path} has no tuned lens; train one with `sparsecircuits tuned-lens RUN`"
        )
    stored = load_weights(weights_path)
    lens = TunedLens.from_model(run.model)
    for name, param in lens.named_parameters():
        tensor = stored.get(name)
        if tensor is None or tuple(tensor.shape) != tuple(param.shape):
            found = "missing" if tensor is None else f"{list(tensor.shape)}"
            raise UserError(
                f"{weights_path} does not fit this model: {name} is {found}, expected "
                f"{list(param.shape)}; train the lens again"
            )
        if not tensor.is_floating_point() or not bool(tensor.isfinite().all()):
            raise UserError(f"{weights_path}: {name} is not all finite numbers; train it again")
        param.data.copy_(tensor)
    return lens


def read_tuned_lens_report(run: Run) -> dict | None:
    """The saved lens's report (tokens trained, held-out KL per layer), if there is one."""
    _, report_path = tuned_lens_paths(run)
    if not report_path.is_file():
        return None
    try:
        return load_json(report_path, dict, "tuned lens report")
    except UserError:  # damaged (or nested too deeply): shown as no report, the lens still loads
        return None
