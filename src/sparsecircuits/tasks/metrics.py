"""Task loss and accuracy (spec section 4).

The task loss of one prompt is -log p(correct) with the softmax restricted to the two candidate
tokens (the prompt's own answer and its partner's), at the prompt's last position. It is reported
per sequence: the original release stored the sum over A and B, twice this value.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sparsecircuits.data import CodeTokenizer
from sparsecircuits.model import GPT
from sparsecircuits.tasks.pairs import TaskBatch, TaskPair, encode_usable_pairs


def candidate_logits(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """[2n, 2]: the (correct, wrong) logits at each prompt's last position.

    `logits` is either the model output [2n, T, V] or already the last positions [2n, V].
    """
    if logits.dim() == 3:
        rows = torch.arange(logits.shape[0], device=logits.device)
        logits = logits[rows, batch.last.to(logits.device)]
    candidates = torch.stack([batch.correct, batch.wrong], dim=1).to(logits.device)
    return logits.gather(1, candidates)


def logit_margins(logits: torch.Tensor, answer: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """[rows] logit(answer) - logit(other), one token pair per row of logits [rows, vocab]: the
    answer margin of every metric here and of the toolkit's (patching, lenses)."""
    candidates = torch.stack([answer, other], dim=1).to(logits.device)
    pair_logits = logits.gather(1, candidates)
    return pair_logits[:, 0] - pair_logits[:, 1]


def task_losses(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """[2n] per-sequence loss -log softmax([correct, wrong])[correct], in nats."""
    pair_logits = candidate_logits(logits, batch).float()
    return margin_loss(pair_logits[:, 0] - pair_logits[:, 1])


def task_accuracy(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """[2n] 1.0 where the correct token's logit beats the wrong one's, else 0.0."""
    pair_logits = candidate_logits(logits, batch)
    return (pair_logits[:, 0] > pair_logits[:, 1]).float()


def answer_margins(model: GPT, batch: TaskBatch, chunk: int = 32) -> torch.Tensor:
    """[2n] logit(correct) - logit(wrong) at each prompt's last token, on the model's device.

    Runs whatever hooks the model has on; differentiable unless called under no_grad.
    """
    device = next(model.parameters()).device
    # Prompts run in chunks of similar length, each cut after its longest prompt: later
    # columns cannot change an answer, and padding would cost as much as prompt tokens.
    by_length = torch.argsort(batch.last, stable=True)
    margins = []
    for start in range(0, batch.tokens.shape[0], chunk):
        rows = by_length[start : start + chunk]
        width = int(batch.last[rows].max()) + 1
        tokens, last = batch.tokens[rows, :width].to(device), batch.last[rows].to(device)
        logits = model(tokens, logits_at=last)  # [rows, vocab]
        margins.append(logit_margins(logits, batch.correct[rows], batch.wrong[rows]))
    return torch.cat(margins)[torch.argsort(by_length).to(device)]  # back in batch order


def margin_loss(margin: torch.Tensor) -> torch.Tensor:
    """Per-sequence task loss from answer margins: -log(e^c / (e^c + e^w)) = softplus(w - c),
    without forming the softmax."""
    return F.softplus(-margin)


def evaluate_pairs(
    label: str, pairs: list[TaskPair], model: GPT, tokenizer: CodeTokenizer, batch_size: int = 64
) -> dict:
    """`evaluate_task` on pairs as text, with the pairs the tokenizer cannot use counted."""
    batch, skipped = encode_usable_pairs(pairs, tokenizer, model.config.n_ctx)
    if batch is None:
        return {"task": label, "n": 0, "loss": None, "accuracy": None, "skipped": skipped}
    return {"task": label, **evaluate_task(model, batch, batch_size), "skipped": skipped}


def evaluate_task(model: GPT, batch: TaskBatch, batch_size: int = 64) -> dict:
    """Mean per-sequence task loss (nats) and accuracy over all pairs, `batch_size` pairs at a
    time. "n" counts pairs; each pair contributes two sequences to the means."""
    with torch.no_grad():
        margins = answer_margins(model, batch, chunk=2 * batch_size).float().cpu()
    return {
        "n": batch.n_pairs,
        "loss": margin_loss(margins).mean().item(),
        "accuracy": (margins > 0).float().mean().item(),
    }
