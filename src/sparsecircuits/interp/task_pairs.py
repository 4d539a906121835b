"""Task-suite pairs as the toolkit's inputs: clean (A) and corrupted (B) prompts with the
two answers the metrics compare, aligned from their last tokens.

The two prompts of a pair need not tokenise to the same length (in many tasks they do not):
positions are counted back from each prompt's last token, so "position -1" is the token the
answer follows in both, and a clean activation is put back at the corrupted position the same
distance from the end. Positions that exist in only one prompt are never patched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sparsecircuits.loading import Run
from sparsecircuits.tasks import TaskBatch, encode_pairs, task_pairs


@dataclass
class PromptPairs:
    clean: torch.Tensor  # [n, T] token ids, right-padded
    corrupted: torch.Tensor  # [n, T]
    clean_last: torch.Tensor  # [n] position of each clean prompt's last token
    corrupted_last: torch.Tensor  # [n]
    clean_answer: torch.Tensor  # [n] the clean prompt's answer token
    corrupted_answer: torch.Tensor  # [n] the corrupted prompt's answer token
    labels: list[str]  # labels of the last `n_positions` positions, oldest first

    @property
    def n(self) -> int:
        return self.clean.shape[0]

    @property
    def n_positions(self) -> int:
        """Positions every prompt of every pair has, counted back from the last token."""
        return int(torch.minimum(self.clean_last, self.corrupted_last).min()) + 1

    def aligned(self, clean_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean activations [n, T_clean, ...] moved to the corrupted prompts' positions
        ([n, T_corrupted, ...], the same distance from the last token), and where that is
        defined ([n, T_corrupted] bool)."""
        width = self.corrupted.shape[1]
        position = torch.arange(width, device=self.clean.device).view(1, -1)
        source = position + (self.clean_last - self.corrupted_last).view(-1, 1)
        valid = (source >= 0) & (position <= self.corrupted_last.view(-1, 1))
        index = source.clamp(0, clean_values.shape[1] - 1)
        index = index.view(*index.shape, *([1] * (clean_values.dim() - 2)))
        gathered = clean_values.gather(1, index.expand(-1, -1, *clean_values.shape[2:]))
        return gathered, valid

    def to(self, device: torch.device | str) -> PromptPairs:
        moved = {
            name: getattr(self, name).to(device)
            for name in (
                "clean",
                "corrupted",
                "clean_last",
                "corrupted_last",
                "clean_answer",
                "corrupted_answer",
            )
        }
        return PromptPairs(**moved, labels=self.labels)


def pairs_from_batch(batch: TaskBatch, token_text=None) -> PromptPairs:  # noqa: ANN001
    """The pairs of an encoded task batch; `token_text(id)` labels the positions."""
    n = batch.n_pairs
    tokens = batch.trimmed().tokens
    pairs = PromptPairs(
        clean=tokens[:n],
        corrupted=tokens[n:],
        clean_last=batch.last[:n],
        corrupted_last=batch.last[n:],
        clean_answer=batch.correct[:n],
        corrupted_answer=batch.correct[n:],
        labels=[],
    )
    pairs.labels = position_labels(pairs, token_text)
    return pairs


def position_labels(pairs: PromptPairs, token_text=None) -> list[str]:  # noqa: ANN001
    """Labels of the shared positions (oldest first), from the first pair: "tok" where the two
    prompts agree, "a/b" where they differ; "-k" when there is no tokenizer."""
    labels = []
    for back in reversed(range(pairs.n_positions)):
        if token_text is None:
            labels.append(f"-{back}" if back else "last")
            continue
        a = int(pairs.clean[0, int(pairs.clean_last[0]) - back])
        b = int(pairs.corrupted[0, int(pairs.corrupted_last[0]) - back])
        labels.append(token_text(a) if a == b else f"{token_text(a)}/{token_text(b)}")
    return labels


def task_prompt_pairs(run: Run, task: str, n: int = 64, seed: int = 0) -> PromptPairs:
    """`n` test pairs of a built-in task for the model in `run`."""
    encoded = encode_pairs(task_pairs(task, "test", n, seed), run.tokenizer, run.model_config.n_ctx)
    return pairs_from_batch(encoded.batch, run.tokenizer.id_to_token_text)
