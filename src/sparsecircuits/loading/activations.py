"""The activation stream: a run's activations at chosen hook points over its own corpus.

Every analysis that needs activations over text (mean activations for pruning, activation
records for neuron explanations, probes, sparse autoencoders) reads them from here, one batch
at a time, so none holds a corpus' worth of activations in memory and all see the same
windows. By default the stream walks the held-out part of the corpus the run was trained on,
in order, in consecutive non-overlapping windows of the model's context length, so the same
call gives the same tokens every time and a long pass can resume from a window index. Two
seeded orders: "shuffled" visits the same grid of non-overlapping windows in a random order
(a sample of the whole split that never shows a token twice, resumable too), "random" draws
windows at any offset, overlaps allowed (an estimate that needs no order, such as a mean).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from tqdm import tqdm

from sparsecircuits.data import TokenizedCorpus, prepare_data, sample_offsets, windows_at
from sparsecircuits.errors import UserError
from sparsecircuits.loading.checkpoint import Run

SPLITS = ("val", "train")


@dataclass
class ActivationBatch:
    tokens: torch.Tensor  # [batch, n_ctx] token ids, on the CPU
    offsets: torch.Tensor  # [batch] where each window starts in the split's token stream
    activations: dict[str, torch.Tensor]  # hook name -> [batch, n_ctx, ...], on the CPU
    first_window: int  # index of this batch's first window in the stream (for resuming)


def run_corpus(run: Run, progress: bool = False) -> TokenizedCorpus:
    """The corpus `run` was trained on, tokenised with the run's own tokenizer (cached)."""
    train_config = run.config.get("train", {})
    try:
        return prepare_data(
            train_config.get("data", "stdlib"),
            tokenizer=run.tokenizer,
            progress=progress,
            glob=train_config.get("data_glob", "**/*.py"),
        )
    except UserError as error:
        raise UserError(f"cannot read the corpus of {run.path}: {error}") from None


ORDERS = ("in_order", "shuffled", "random")


@torch.no_grad()
def iter_activations(
    run: Run,
    hooks: str | Iterable[str],
    n_tokens: int,
    batch_size: int = 16,
    *,
    split: str = "val",
    order: str = "in_order",
    seed: int = 0,
    window: int | None = None,
    start: int = 0,
    corpus: TokenizedCorpus | None = None,
    progress: bool = False,
) -> Iterator[ActivationBatch]:
    """Activations at `hooks` (names or globs) over about `n_tokens` tokens of `split`, in
    windows of `window` tokens (default: the model's context), each run as its own sequence.

    "in_order" and "shuffled" give n_tokens // window windows of the grid from window `start`
    of their order, fewer at the end of the split; "random" gives n_tokens // window windows
    drawn with `seed` (`start` is ignored).
    """
    n_ctx = run.model_config.n_ctx
    window = window or n_ctx
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
    if order not in ORDERS:
        raise UserError(f"unknown window order {order!r} (choose from {', '.join(ORDERS)})")
    if n_tokens < 1 or batch_size < 1 or start < 0 or not 1 <= window <= n_ctx:
        raise UserError(
            f"n_tokens and batch_size must be positive, start at least 0 and the window "
            f"1..{n_ctx} tokens, got {n_tokens}, {batch_size}, {start}, {window}"
        )
    model = run.model
    names = model.resolve_hook_names(hooks)  # an unknown name is a UserError with suggestions
    corpus = corpus or run_corpus(run, progress)
    stream = corpus.val if split == "val" else corpus.train
    wanted = max(1, n_tokens // window)
    if order == "random":
        generator = torch.Generator().manual_seed(seed)
        batches = (
            sample_offsets(stream, min(batch_size, wanted - first), window, generator)
            for first in range(0, wanted, batch_size)
        )
        start = 0
    else:
        grid = len(stream) // window
        if order == "in_order":
            windows = torch.arange(grid)
        else:
            windows = torch.randperm(grid, generator=torch.Generator().manual_seed(seed))
        chosen = windows[start : start + wanted] * window
        batches = iter(chosen.split(batch_size) if len(chosen) else ())
    device = next(model.parameters()).device
    bar = tqdm(total=wanted * window, unit="tok", unit_scale=True, disable=not progress)
    first_window = start
    with bar:
        for offsets in batches:
            tokens = windows_at(stream, offsets, window)
            with model.cache(names, device="cpu") as cache:
                model(tokens.to(device), stop_at_layer=layers_needed(names))
            yield ActivationBatch(tokens, offsets, dict(cache), first_window)
            first_window += len(offsets)
            bar.update(tokens.numel())


def layers_needed(hooks: list[str]) -> int | None:
    """How many blocks must run to reach every hook (None: the whole model)."""
    layers = []
    for hook in hooks:
        parts = hook.split(".")
        if parts[0] != "blocks":
            return None
        layers.append(int(parts[1]) + 1)
    return max(layers)
