"""Baselines that need no language model (spec section 5), scored exactly like explanations.

- token table: the unit's mean activation per token over the explain half's excerpts; it
  predicts a token's activation as its mean (0 for a token never seen). A table carries far
  more than a sentence, so it is the bar an explanation has to clear on random text.
- weights: each vocabulary token's own embedding, through the MLP's input norm and weights,
  ignoring attention: the unit's "preferred tokens" read off the weights alone. Almost exact
  for first-layer MLP neurons, poor later (MLP units only).
- next token: the offline explainer limited to "any token before X" explanations, for units
  that predict the next token rather than read the current one.
- named tokens (for puzzles, which rank given explanations): no simulation at all; an
  explanation scores by how many of the active tokens are words it names, less how many of
  the inactive ones are. The bar a simulator must clear to show it reads more than keywords.

Each baseline is its own explainer and simulator: `explain` builds the unit's predictor and
returns a short description naming its strongest tokens (that text is the key the simulator
reads it back by), `simulate` applies it.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F

from sparsecircuits.explain.offline import Evidence, OfflineExplainer, candidate_rules
from sparsecircuits.explain.prose import QUOTED
from sparsecircuits.explain.rules import Rules, quote_list
from sparsecircuits.explain.scoring import ACTIVE_FRACTION
from sparsecircuits.explain.vocabulary import FRAMING, FUNCTION_WORDS, bare, inflections
from sparsecircuits.loading import Run

SHOWN_TOKENS = 5


class TableBaseline:
    """Shared by the table-like baselines: predictions keyed by the description they return."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, float]] = {}

    def describe(self, evidence: Evidence, table: dict[str, float], what: str) -> str:
        strongest = sorted(table, key=table.get, reverse=True)[:SHOWN_TOKENS]
        shown = quote_list(strongest) if strongest else "nothing"
        description = f"{what} of {evidence.unit} ({len(table)} tokens; strongest {shown})"
        self.tables[description] = table
        return description

    def simulate(self, explanation: str, excerpts: list[list[str]]) -> list[list[float]]:
        table = self.tables.get(explanation, {})
        return [[table.get(token, 0.0) for token in tokens] for tokens in excerpts]


class TokenTableBaseline(TableBaseline):
    name = "baseline:token-table"

    def explain(self, evidence: Evidence) -> str:
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for excerpt in evidence.excerpts:
            for token, value in zip(evidence.texts(excerpt), excerpt.activations, strict=True):
                sums[token] = sums.get(token, 0.0) + value
                counts[token] = counts.get(token, 0) + 1
        table = {token: sums[token] / counts[token] for token in sums}
        return self.describe(evidence, table, "token table")


class WeightBaseline(TableBaseline):
    name = "baseline:weights"

    def __init__(self, run: Run) -> None:
        super().__init__()
        self.run = run

    @torch.no_grad()
    def explain(self, evidence: Evidence) -> str:
        layer, kind, index = evidence.unit.split(".")
        if kind != "mlp":
            return self.describe(evidence, {}, "weight-based prediction (MLP units only)")
        block = self.run.model.blocks[int(layer)]
        embeddings = self.run.model.wte.weight
        normed = block.norm_mlp(embeddings)
        pre = normed @ block.mlp.fc.weight[int(index)] + block.mlp.fc.bias[int(index)]
        post = F.gelu(pre).cpu()
        texts = evidence.token_texts
        table = {texts[token]: float(post[token]) for token in range(len(texts))}
        return self.describe(evidence, table, "weight-based prediction")


class NextTokenBaseline(OfflineExplainer):
    """The offline explainer, allowed only "any token before X"."""

    name = "baseline:next-token"

    def __init__(self) -> None:
        super().__init__(categories=False)

    def candidates(self, evidence: Evidence) -> dict[tuple, Rules]:
        return {
            recipe: rules
            for recipe, rules in candidate_rules(evidence).items()
            if rules.before and not rules.targets
        }


def named_words(explanation: str) -> set[str]:
    """The words an explanation names: what it quotes, and its content words (framing and
    function words left out), each with its plural and third-person forms."""
    quoted = [next(g for g in m.groups() if g is not None) for m in QUOTED.finditer(explanation)]
    plain = FRAMING.sub(" ", QUOTED.sub(" ", explanation).lower())
    words = {bare(q) for q in quoted if bare(q)}
    words.update(w for w in re.findall(r"[a-z0-9]+", plain) if w not in FUNCTION_WORDS)
    return {form for word in words for form in inflections(word)}


def naming_score(
    explanation: str, excerpts: list[list[str]], activations: list[list[float]]
) -> float:
    """Share of the active tokens (at least ACTIVE_FRACTION of the max) that are words the
    explanation names, less that share of the inactive tokens."""
    words = named_words(explanation)
    top = max((max(row) for row in activations if row), default=0.0)
    hits = {True: [], False: []}
    for tokens, row in zip(excerpts, activations, strict=True):
        for token, value in zip(tokens, row, strict=True):
            hits[top > 0 and value >= ACTIVE_FRACTION * top].append(bare(token) in words)
    share = {active: sum(found) / len(found) if found else 0.0 for active, found in hits.items()}
    return share[True] - share[False]
