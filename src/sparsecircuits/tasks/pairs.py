"""Task pairs as text, on disk (JSONL) and as a batch of token ids.

A pair is two prompts that differ minimally; each has one correct continuation, and each
prompt's correct continuation is the other prompt's wrong one. The model is only ever asked about
the first token of a continuation, so encoding a pair means finding that token: the first token
after the prompt in the tokenisation of prompt + answer. Byte-level BPE can merge across the
prompt/answer boundary; such pairs (and pairs whose two answers start with the same token, or
whose prompts do not fit the model's context) are skipped and counted, never silently altered.

The same batch serves the task loss (every prompt against its partner's answer), pruning and
the toolkit's clean-vs-corrupted analyses: its A rows are the clean prompts, its B rows the
corrupted ones, and `alignments` says, by a token-level diff (alignment.py), which clean tokens
differ and which corrupted position each clean token corresponds to.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated

import torch
from pydantic import BaseModel, StringConstraints

from sparsecircuits.data import CodeTokenizer
from sparsecircuits.errors import UserError
from sparsecircuits.files import write_text_atomic
from sparsecircuits.tasks.alignment import NO_COUNTERPART, PairAlignment, align_prompts
from sparsecircuits.validation import parse_json

PAIR_KEYS = ("prompt_a", "prompt_b", "answer_a", "answer_b")
SKIP_REASONS = ("not_prefix", "same_answer", "too_long")


@dataclass(frozen=True)
class TaskPair:
    """Two minimally different prompts and the correct continuation text of each."""

    prompt_a: str
    prompt_b: str
    answer_a: str
    answer_b: str

    def __post_init__(self) -> None:
        for key in PAIR_KEYS:
            value = getattr(self, key)
            if not isinstance(value, str) or not value:
                raise UserError(f"TaskPair.{key} must be a non-empty string, got {value!r}")


@dataclass
class TaskBatch:
    """Encoded pairs: rows 0..n-1 are the A prompts, rows n..2n-1 the B prompts, same order."""

    tokens: torch.Tensor  # [2n, T] int64, right-padded with EOT
    last: torch.Tensor  # [2n] position of each prompt's last token
    correct: torch.Tensor  # [2n] the answer token of each prompt
    wrong: torch.Tensor  # [2n] the answer token of the other prompt of its pair
    n_pairs: int

    def subset(self, index: torch.Tensor | range | list[int] | slice | int) -> TaskBatch:
        """The pairs at `index`, A and B rows together. `index` holds pair numbers (a tensor,
        range or list), or is a slice, one number, or a boolean mask tensor over the pairs."""
        if isinstance(index, range | list | tuple):
            index = torch.tensor(list(index), dtype=torch.int64)
        elif isinstance(index, torch.Tensor):
            index = index.cpu()
        pairs = torch.arange(self.n_pairs)[index].reshape(-1)
        rows = torch.cat([pairs, pairs + self.n_pairs])
        return TaskBatch(
            tokens=self.tokens[rows],
            last=self.last[rows],
            correct=self.correct[rows],
            wrong=self.wrong[rows],
            n_pairs=len(pairs),
        )

    def trimmed(self) -> TaskBatch:
        """The same batch without padding columns that no prompt reaches."""
        width = int(self.last.max()) + 1 if self.n_pairs else 0
        return TaskBatch(self.tokens[:, :width], self.last, self.correct, self.wrong, self.n_pairs)

    def to(self, device: torch.device | str) -> TaskBatch:
        return TaskBatch(
            tokens=self.tokens.to(device),
            last=self.last.to(device),
            correct=self.correct.to(device),
            wrong=self.wrong.to(device),
            n_pairs=self.n_pairs,
        )

    # The pairs as clean (A) and corrupted (B) prompts, for analyses that run one against the
    # other: views of the rows above, never copies.
    @property
    def clean(self) -> torch.Tensor:
        """[n, T] the clean prompts' token ids, right-padded."""
        return self.tokens[: self.n_pairs]

    @property
    def corrupted(self) -> torch.Tensor:
        """[n, T] the corrupted prompts' token ids, right-padded."""
        return self.tokens[self.n_pairs :]

    @property
    def clean_last(self) -> torch.Tensor:
        return self.last[: self.n_pairs]

    @property
    def corrupted_last(self) -> torch.Tensor:
        return self.last[self.n_pairs :]

    @property
    def clean_answer(self) -> torch.Tensor:
        """[n] the clean prompts' answer tokens."""
        return self.correct[: self.n_pairs]

    @property
    def corrupted_answer(self) -> torch.Tensor:
        """[n] the answer the clean prompt must not give: its partner's (the B rows' own)."""
        return self.wrong[: self.n_pairs]

    @cached_property
    def alignments(self) -> list[PairAlignment]:
        """The diff of every pair's two prompts (computed once per batch, on the CPU)."""
        tokens, last = self.tokens.cpu(), self.last.cpu().tolist()
        prompts = [tokens[row, : last[row] + 1].tolist() for row in range(len(last))]
        n = self.n_pairs
        return [align_prompts(prompts[i], prompts[n + i]) for i in range(n)]

    def differing_positions(self) -> torch.Tensor:
        """[n, T] bool, on the batch's device: True at the clean tokens that differ from the
        corrupted prompt's (what causal tracing noises)."""
        mask = torch.zeros(self.clean.shape, dtype=torch.bool)
        for row, alignment in enumerate(self.alignments):
            mask[row, list(alignment.differing)] = True
        return mask.to(self.tokens.device)

    def counterparts(self) -> torch.Tensor:
        """[n, T] int64, on the batch's device: the clean position aligned to each corrupted
        position, NO_COUNTERPART (-1) where there is none (and on padding)."""
        index = torch.full(self.corrupted.shape, NO_COUNTERPART, dtype=torch.int64)
        for row, alignment in enumerate(self.alignments):
            index[row, : len(alignment.counterpart)] = torch.tensor(alignment.counterpart)
        return index.to(self.tokens.device)

    def at_corrupted_positions(
        self, clean_values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean activations [n, T, ...] moved to the corrupted positions aligned to them
        ([n, T, ...]), and where a corrupted position has a clean counterpart ([n, T] bool);
        elsewhere the values are meaningless and must not be used."""
        source = self.counterparts().to(clean_values.device)
        valid = source != NO_COUNTERPART
        index = source.clamp(min=0).view(*source.shape, *([1] * (clean_values.dim() - 2)))
        moved = clean_values.gather(1, index.expand(-1, -1, *clean_values.shape[2:]))
        return moved, valid


@dataclass
class EncodedTask:
    """The usable pairs as a batch, how many pairs were skipped for each reason, and which
    pairs of the input (by index) the batch holds, in its order."""

    batch: TaskBatch
    skipped: dict[str, int]
    kept: list[int] = field(default_factory=list)


def answer_token(prompt_ids: list[int], full_ids: list[int]) -> int | None:
    """The first token after the prompt in tokenize(prompt + answer), or None when the prompt's
    own tokens are not a prefix of it (BPE merged across the boundary) or nothing follows."""
    n = len(prompt_ids)
    if len(full_ids) <= n or full_ids[:n] != prompt_ids:
        return None
    return full_ids[n]


def encode_pairs(pairs: list[TaskPair], tokenizer: CodeTokenizer, n_ctx: int) -> EncodedTask:
    """Tokenise the pairs the model can be asked about; count the rest by reason."""
    batch, skipped, kept = encode_kept_pairs(pairs, tokenizer, n_ctx)
    if batch is None:
        raise UserError(describe_skips(len(pairs), skipped, n_ctx))
    return EncodedTask(batch, skipped, kept)


def encode_usable_pairs(
    pairs: list[TaskPair], tokenizer: CodeTokenizer, n_ctx: int
) -> tuple[TaskBatch | None, dict[str, int]]:
    """As encode_pairs, but None instead of an error when no pair is usable."""
    batch, skipped, _ = encode_kept_pairs(pairs, tokenizer, n_ctx)
    return batch, skipped


def encode_kept_pairs(
    pairs: list[TaskPair], tokenizer: CodeTokenizer, n_ctx: int
) -> tuple[TaskBatch | None, dict[str, int], list[int]]:
    """The batch of the usable pairs (None if there is none), the skips by reason, and the
    indices in `pairs` of the pairs kept."""
    if not pairs:
        raise UserError("no task pairs to encode")
    texts = []
    for pair in pairs:
        texts += [pair.prompt_a, pair.prompt_a + pair.answer_a]
        texts += [pair.prompt_b, pair.prompt_b + pair.answer_b]
    ids = tokenizer.encode_batch(texts)
    skipped = dict.fromkeys(SKIP_REASONS, 0)
    prompts_a, prompts_b, answers_a, answers_b, kept = [], [], [], [], []
    for i in range(len(pairs)):
        prompt_a, full_a, prompt_b, full_b = ids[4 * i : 4 * i + 4]
        answer_a = answer_token(prompt_a, full_a)
        answer_b = answer_token(prompt_b, full_b)
        if answer_a is None or answer_b is None:
            skipped["not_prefix"] += 1
        elif answer_a == answer_b:
            skipped["same_answer"] += 1
        elif max(len(prompt_a), len(prompt_b)) > n_ctx:
            skipped["too_long"] += 1
        else:
            prompts_a.append(prompt_a)
            prompts_b.append(prompt_b)
            answers_a.append(answer_a)
            answers_b.append(answer_b)
            kept.append(i)
    if not prompts_a:
        return None, skipped, kept
    batch = pad_batch(prompts_a + prompts_b, answers_a, answers_b, tokenizer.eot_id)
    return batch, skipped, kept


def describe_skips(n_pairs: int, skipped: dict[str, int], n_ctx: int) -> str:
    return (
        f"none of {n_pairs} pairs is usable: {skipped['not_prefix']} have an answer that does not "
        f"start at a token boundary, {skipped['same_answer']} have the same answer token for A "
        f"and B, {skipped['too_long']} have a prompt longer than n_ctx {n_ctx} tokens"
    )


def pad_batch(
    prompts: list[list[int]], answers_a: list[int], answers_b: list[int], pad_id: int
) -> TaskBatch:
    # Right padding is harmless: causal attention never lets a prompt's last token see it.
    width = max(len(prompt) for prompt in prompts)
    tokens = torch.full((len(prompts), width), pad_id, dtype=torch.int64)
    for row, prompt in enumerate(prompts):
        tokens[row, : len(prompt)] = torch.tensor(prompt, dtype=torch.int64)
    return TaskBatch(
        tokens=tokens,
        last=torch.tensor([len(prompt) - 1 for prompt in prompts], dtype=torch.int64),
        correct=torch.tensor(answers_a + answers_b, dtype=torch.int64),
        wrong=torch.tensor(answers_b + answers_a, dtype=torch.int64),
        n_pairs=len(answers_a),
    )


def read_pairs_jsonl(path: str | Path) -> list[TaskPair]:
    """Pairs from a JSONL file: one object per line with the four keys; blank lines ignored."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"pairs file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read pairs file {path}: {error}") from None
    pairs, bad_lines, first_problem = [], [], ""
    # JSONL lines end at "\n" only: splitlines() would also split at characters such as U+2028
    # that JSON allows inside a string, and blame the lines after it.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            pairs.append(parse_pair(line, f"line {number}"))
        except UserError as error:
            bad_lines.append(number)
            first_problem = first_problem or str(error)
    if bad_lines:
        raise UserError(
            f"{path}: malformed lines {', '.join(map(str, bad_lines))} "
            f"(need {', '.join(PAIR_KEYS)} as non-empty strings; {first_problem})"
        )
    if not pairs:
        raise UserError(f"{path}: no pairs (the file is empty)")
    return pairs


NonEmptyText = Annotated[str, StringConstraints(min_length=1)]


class PairLine(BaseModel):
    """One line of a pairs file; other keys on the line are ignored."""

    prompt_a: NonEmptyText
    prompt_b: NonEmptyText
    answer_a: NonEmptyText
    answer_b: NonEmptyText


def parse_pair(line: str, source: str = "pair") -> TaskPair:
    """The pair on one JSONL line; a UserError naming `source` and the field when malformed."""
    return TaskPair(**parse_json(line, PairLine, source).model_dump())


def write_pairs_jsonl(pairs: list[TaskPair], path: str | Path) -> None:
    write_text_atomic(Path(path), "".join(json.dumps(asdict(pair)) + "\n" for pair in pairs))
