"""Neuron puzzles: synthetic units whose true explanation is known (spec section 9).

A puzzle file is a JSON list of
`{"name", "explanation", "false_explanations": [...], "excerpts": [{"tokens": [...],
"activations": [...]}]}`, tokens as strings. Two questions per puzzle:

- does the scorer rank the true explanation above the false ones? Every candidate is simulated
  on all excerpts and scored by correlation;
- can the explainer find the truth? It explains from the even-numbered excerpts and its
  explanation is scored on the odd-numbered ones (never the excerpts it saw).

Three sets ship beside this module (`puzzles run --set NAME`):
- shipped (puzzles.json, written by tools/make_puzzles.py with the offline explainer's grammar
  and category list in mind): 16 puzzles whose truths the offline simulator reads by
  construction, so it measures little;
- dev (puzzles_dev.json) and heldout (puzzles_heldout.json): 19 puzzles each, written in plain
  prose by someone who never read the scorer (next token, position, context meaning,
  repetition, syntax, facts, categories). The offline simulator was developed on dev only;
  heldout is for reporting.
Beside the simulator's ranking, a naive baseline ranks the same candidates by how many of the
words they name are among the puzzle's active tokens (explain.baselines.naming_score).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sparsecircuits.errors import UserError
from sparsecircuits.explain.baselines import naming_score
from sparsecircuits.explain.offline import Evidence
from sparsecircuits.explain.records import Excerpt
from sparsecircuits.explain.scoring import correlation
from sparsecircuits.validation import bounded_float, load_json

SHIPPED = Path(__file__).parent / "puzzles.json"
PUZZLE_SETS = {
    "shipped": SHIPPED,
    "dev": Path(__file__).parent / "puzzles_dev.json",
    "heldout": Path(__file__).parent / "puzzles_heldout.json",
}
# Activations are finite and at most this large: scoring sums their squares and products over
# every token, which overflows to inf (and the scores to NaN) long before 1e308.
MAX_ACTIVATION = 1e9


class PuzzleExcerpt(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tokens: list[str] = Field(min_length=1)
    activations: list[bounded_float(MAX_ACTIVATION)]  # type: ignore[valid-type]

    @model_validator(mode="after")
    def same_length(self) -> PuzzleExcerpt:
        if len(self.tokens) != len(self.activations):
            raise ValueError(f"{len(self.tokens)} tokens but {len(self.activations)} activations")
        return self


class Puzzle(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    explanation: str = Field(min_length=1)
    false_explanations: list[str] = Field(min_length=1)
    excerpts: list[PuzzleExcerpt] = Field(min_length=2)


def read_puzzles(path: Path) -> list[Puzzle]:
    puzzles = load_json(path, list[Puzzle], "puzzle file")
    if not puzzles:
        raise UserError(f"{path} holds no puzzles")
    return puzzles


def solve_puzzles(puzzles: list[Puzzle], explainer, simulator) -> dict:  # noqa: ANN001
    """The summary `puzzles run` prints: how often the truth ranks first and in the top two,
    and per puzzle every candidate's score and the explainer's own explanation."""
    per_puzzle = [solve(puzzle, explainer, simulator) for puzzle in puzzles]
    return {
        "puzzles": len(puzzles),
        "truth_ranked_first": sum(result["truth_rank"] == 1 for result in per_puzzle),
        "top_two": sum(result["truth_rank"] <= 2 for result in per_puzzle),
        "explainer": explainer.name,
        "simulator": simulator.name,
        "baseline": {
            "name": "named tokens (no simulation: words an explanation names, among the "
            "active tokens)",
            "truth_ranked_first": sum(result["baseline_rank"] == 1 for result in per_puzzle),
            "top_two": sum(result["baseline_rank"] <= 2 for result in per_puzzle),
        },
        "per_puzzle": per_puzzle,
    }


def solve(puzzle: Puzzle, explainer, simulator) -> dict:  # noqa: ANN001
    texts = [excerpt.tokens for excerpt in puzzle.excerpts]
    truth = [excerpt.activations for excerpt in puzzle.excerpts]
    candidates = [puzzle.explanation, *puzzle.false_explanations]
    scores = [score_or_floor(correlation(truth, simulator.simulate(c, texts))) for c in candidates]
    baseline = [naming_score(c, texts, truth) for c in candidates]
    seen, held_out = puzzle.excerpts[0::2], puzzle.excerpts[1::2]
    own = explainer.explain(puzzle_evidence(puzzle.name, seen))
    own_score = correlation(
        [e.activations for e in held_out], simulator.simulate(own, [e.tokens for e in held_out])
    )
    return {
        "name": puzzle.name,
        "truth": puzzle.explanation,
        "truth_rank": truth_rank(scores),
        "scores": dict(zip(candidates, scores, strict=True)),
        "baseline_rank": truth_rank(baseline),
        "explainer_explanation": own,
        "explainer_score": own_score,
    }


def truth_rank(scores: list[float]) -> int:
    """The truth's (first score's) rank. Ties count against it: a scorer that cannot tell the
    candidates apart has not ranked the truth."""
    return 1 + sum(score >= scores[0] for score in scores[1:])


def score_or_floor(score: float | None) -> float:
    return -1.0 if score is None else score


def puzzle_evidence(name: str, excerpts: list[PuzzleExcerpt]) -> Evidence:
    """Evidence over a puzzle's own vocabulary: its token strings numbered in order."""
    vocabulary = list(dict.fromkeys(token for excerpt in excerpts for token in excerpt.tokens))
    index = {token: number for number, token in enumerate(vocabulary)}
    records = [
        Excerpt([index[token] for token in excerpt.tokens], list(excerpt.activations), number)
        for number, excerpt in enumerate(excerpts)
    ]
    records.sort(key=lambda record: -record.max)
    top = max((record.max for record in records), default=0.0)
    return Evidence(name, records, [], vocabulary, top)
