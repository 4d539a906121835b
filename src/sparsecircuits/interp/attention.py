"""Attention patterns of one prompt, and detectors that score every head as a previous-token,
duplicate-token or induction head.

The detectors run the model on seeded random tokens and read `blocks.L.attn.hook_pattern`
([batch, head, query, key]). Each score is the mean attention from a query to one key a fixed
distance back, so each layer's pattern is reduced to [head] numbers inside its hook and never
kept: memory stays at one layer's pattern whatever the depth.

- previous-token: attention from position p to p - 1, on random tokens;
- duplicate-token and induction: on a random sequence of `period` distinct tokens repeated
  twice, attention from each token of the second copy to the same token in the first copy
  (duplicate), or to the token after that first occurrence (induction: "A B ... A -> B").

One prompt's patterns are also written as a self-contained HTML page (pick a layer and head,
hover over a token to see where it looks) with the numbers as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from markupsafe import Markup

from sparsecircuits.errors import UserError
from sparsecircuits.files import json_text
from sparsecircuits.interp.figures import TEMPLATES, Grid, grid_files
from sparsecircuits.interp.outputs import write_outputs
from sparsecircuits.loading import Run
from sparsecircuits.loading.memory import forward_bytes, require_memory
from sparsecircuits.model import GPT
from sparsecircuits.model.hooks import HookPoint
from sparsecircuits.render import render

PATTERN_HOOKS = "blocks.*.attn.hook_pattern"
DETECTORS = {
    "previous_token": "attention from each token to the one before it",
    "duplicate_token": "attention from each token of a repeated sequence to its first occurrence",
    "induction": "attention from each token of a repeated sequence to the token after its "
    "first occurrence",
}
MIN_SEQUENCE = 4  # two copies of at least two tokens: the shortest induction can be seen in


def model_device(model: GPT) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def attention_patterns(model: GPT, tokens: torch.Tensor) -> torch.Tensor:
    """[layer, head, query, key] attention probabilities of one prompt ([p] or [1, p] ids)."""
    if tokens.dim() == 1:
        tokens = tokens.unsqueeze(0)
    if tokens.dim() != 2 or tokens.shape[0] != 1:
        raise ValueError(f"one prompt expected, got token ids of shape {tuple(tokens.shape)}")
    n_layer = model.config.n_layer
    _, cache = model.run_with_cache(
        tokens.to(model_device(model)), PATTERN_HOOKS, stop_at_layer=n_layer
    )
    return cache.stacked(PATTERN_HOOKS)[:, 0].float().cpu()


# The detectors.
@torch.no_grad()
def attention_at_offsets(
    model: GPT, tokens: torch.Tensor, offsets: dict[str, tuple[int, int]]
) -> dict[str, torch.Tensor]:
    """For each name -> (back, first_query): [n_layer, n_head] mean attention from every query
    q >= first_query to key q - back, over the batch. One forward pass for all of them."""
    config = model.config
    scores = {name: torch.zeros(config.n_layer, config.n_head) for name in offsets}

    def reduce(pattern: torch.Tensor, hook: HookPoint) -> None:
        layer = int(hook.name.split(".")[1])
        for name, (back, first_query) in offsets.items():
            # Entry j of this diagonal is query j + back looking at key j.
            diagonal = pattern.diagonal(offset=-back, dim1=-2, dim2=-1)[..., first_query - back :]
            scores[name][layer] = diagonal.float().mean(dim=(0, 2)).cpu()

    with model.edit({PATTERN_HOOKS: reduce}):
        model(tokens.to(model_device(model)), stop_at_layer=config.n_layer)
    return scores


def previous_token_scores(model: GPT, tokens: torch.Tensor) -> torch.Tensor:
    """[n_layer, n_head] mean attention from each position p >= 1 to p - 1 on `tokens`."""
    if tokens.shape[-1] < 2:
        raise UserError("previous-token scores need sequences of at least 2 tokens")
    return attention_at_offsets(model, tokens, {"previous_token": (1, 1)})["previous_token"]


def repeated_sequence_scores(model: GPT, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Duplicate-token and induction scores, [n_layer, n_head] each, on sequences made of one
    block of `period` tokens repeated twice (tokens [batch, 2 * period])."""
    period = tokens.shape[-1] // 2
    if tokens.shape[-1] != 2 * period or period < 2:
        raise UserError(f"repeated sequences need an even length of at least {MIN_SEQUENCE}")
    if not torch.equal(tokens[:, :period], tokens[:, period:]):
        raise ValueError("the second half of each sequence must repeat the first")
    offsets = {"duplicate_token": (period, period), "induction": (period - 1, period)}
    return attention_at_offsets(model, tokens, offsets)


def random_tokens(
    token_ids: torch.Tensor, n_sequences: int, length: int, generator: torch.Generator
) -> torch.Tensor:
    """[n_sequences, length] ids drawn from `token_ids`; without repeats inside a sequence when
    there are enough ids, so "the same token earlier" means exactly one position."""
    if length <= token_ids.numel():
        order = torch.rand(n_sequences, token_ids.numel(), generator=generator).argsort(dim=1)
        return token_ids[order[:, :length]]
    return token_ids[torch.randint(token_ids.numel(), (n_sequences, length), generator=generator)]


def drawable_token_ids(run: Run) -> list[int]:
    """The ids a detector may draw for `run`'s model: the tokenizer's, less end-of-text (which
    the model only sees between documents); every id when the run has no tokenizer."""
    tokenizer = run.tokenizer_or_none
    if tokenizer is None:
        return list(range(run.model_config.vocab_size))
    return [i for i in range(tokenizer.vocab_size) if i != tokenizer.eot_id]


def detect_heads(
    model: GPT,
    seq_len: int | None = None,
    n_sequences: int = 16,
    seed: int = 0,
    token_ids: Sequence[int] | None = None,
) -> dict[str, torch.Tensor]:
    """Previous-token, duplicate-token and induction scores, [n_layer, n_head] each.

    `seq_len` tokens per sequence (default: n_ctx, at most 64; the repeated sequences use the
    largest even length that fits), `n_sequences` seeded random sequences drawn from
    `token_ids` (default: every id of the vocabulary).
    """
    n_ctx = model.config.n_ctx
    seq_len = min(n_ctx, 64) if seq_len is None else seq_len
    if not MIN_SEQUENCE <= seq_len <= n_ctx:
        raise UserError(
            f"--seq-len must be between {MIN_SEQUENCE} and n_ctx {n_ctx}, got {seq_len}"
        )
    if n_sequences < 1:
        raise UserError(f"the number of sequences must be at least 1, got {n_sequences}")
    ids = torch.arange(model.config.vocab_size) if token_ids is None else torch.tensor(token_ids)
    if ids.numel() < 2:
        raise UserError("the detectors need at least 2 token ids to draw random sequences from")
    # Every sequence at once: a shuffle of the ids for each (float keys, int64 order), then
    # one forward pass without logits.
    shuffles = n_sequences * ids.numel() * 12
    needed = shuffles + forward_bytes(model.config, n_sequences, seq_len, logit_positions=0)
    what = f"--sequences {n_sequences} of --seq-len {seq_len}"
    require_memory(needed, what, str(model_device(model)))
    generator = torch.Generator().manual_seed(seed)
    plain = random_tokens(ids, n_sequences, seq_len, generator)
    block = random_tokens(ids, n_sequences, seq_len // 2, generator)
    scores = {"previous_token": previous_token_scores(model, plain)}
    scores.update(repeated_sequence_scores(model, block.repeat(1, 2)))
    return scores


def top_heads(scores: torch.Tensor, k: int = 3) -> list[tuple[int, int, float]]:
    """The `k` highest-scoring heads as (layer, head, score), best first."""
    flat = scores.flatten()
    best = flat.argsort(descending=True)[:k].tolist()
    return [(*divmod(index, scores.shape[1]), float(flat[index])) for index in best]


def detector_grid(name: str, scores: torch.Tensor, summary: dict | None = None) -> Grid:
    n_layer, n_head = scores.shape
    return Grid(
        title=f"{name.replace('_', '-')} heads",
        values=scores,
        rows=[f"layer {layer}" for layer in range(n_layer)],
        columns=[f"head {head}" for head in range(n_head)],
        row_axis="layer",
        column_axis="head",
        value_label="mean attention probability",
        diverging=False,
        summary={"score": DETECTORS[name], **(summary or {})},
    )


def write_head_scores(
    scores: dict[str, torch.Tensor], out: Path, summary: dict | None = None
) -> list[Path]:
    """OUT/NAME.{png,html,json} for every detector, written together; returns the paths."""
    files = {}
    for name, values in scores.items():
        files.update(grid_files(detector_grid(name, values, summary), name))
    return write_outputs(out, files)


# One prompt's patterns as a page.
def script_json(data: object) -> Markup:
    """`data` as JSON that can sit inside a <script> element: no character of it can close
    the element or open a comment, so text such as "</script>" in a token stays data."""
    text = json.dumps(data, ensure_ascii=True, allow_nan=False)  # pure ASCII, no raw controls
    text = text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
    return Markup(text)  # safe: made so above, and the page reads it with JSON.parse


def pattern_data(token_texts: list[str], patterns: torch.Tensor, digits: int = 4) -> dict:
    """The page's numbers: each query's attention to itself and earlier keys (the rest is 0)."""
    n_layer, n_head, n_pos, _ = patterns.shape
    if len(token_texts) != n_pos:
        raise ValueError(f"{len(token_texts)} token texts for patterns over {n_pos} positions")
    rounded = patterns.double().cpu().round(decimals=digits).tolist()
    return {
        "tokens": token_texts,
        "n_layer": n_layer,
        "n_head": n_head,
        "patterns": [
            [[row[: query + 1] for query, row in enumerate(head)] for head in layer]
            for layer in rounded
        ],
    }


def attention_page(token_texts: list[str], patterns: torch.Tensor, title: str) -> str:
    """A self-contained HTML page of [layer, head, query, key] patterns over `token_texts`."""
    data = pattern_data(token_texts, patterns)
    return render(
        TEMPLATES, "attention.html", title=title, tokens=token_texts, data=script_json(data)
    )


def write_attention(
    token_texts: list[str], patterns: torch.Tensor, out: Path, title: str
) -> list[Path]:
    """OUT/attention.html and OUT/attention.json (tokens and patterns); returns both paths."""
    page = attention_page(token_texts, patterns, title)
    numbers = json_text(pattern_data(token_texts, patterns), indent=None)
    return write_outputs(out, {"attention.html": page.encode(), "attention.json": numbers.encode()})
