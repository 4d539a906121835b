"""The offline explainer and simulator: no server, no network, a few milliseconds a unit.

The explainer reads the evidence a person would: on the explain half's excerpts, which tokens
the unit fires on, which tokens come right before and after them, and (for a first-layer unit)
which tokens its input weights favour. It writes candidate explanations in the quoted-token
grammar of explain.rules (a few tokens; tokens after a context; any token after or before
one), simulates each on the explain half only, and keeps the one whose simulation matches
best, preferring the shorter at a tie. The scoring half is never seen, so its scores are
honest.

The simulator reads an explanation alone: quoted tokens go through explain.rules; an
explanation without quoted tokens (a person's or an LLM's prose) is simulated by sentence
embeddings (explain.semantic), when that package is installed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sparsecircuits.explain.records import Excerpt
from sparsecircuits.explain.rules import Rules, parse_rules, simulate_rules
from sparsecircuits.explain.scoring import ACTIVE_FRACTION, correlation

MAX_TARGETS = 6  # tokens an explanation names at most: a sentence, not a lookup table
MAX_CONTEXT = 3


@dataclass
class Evidence:
    """What the explainer sees of one unit: excerpts of the explain half, as token strings."""

    unit: str
    top: list[Excerpt]  # highest max activation first
    random: list[Excerpt]  # a uniform sample
    token_texts: Sequence[str]  # token id -> its text
    max_activation: float
    favoured_tokens: list[str] | None = None  # by input weights (first-layer units)

    @property
    def excerpts(self) -> list[Excerpt]:
        return self.top + self.random

    def texts(self, excerpt: Excerpt) -> list[str]:
        return [self.token_texts[token] for token in excerpt.tokens]


class OfflineSimulator:
    name = "offline"

    def __init__(self, semantic=None) -> None:
        self.semantic = semantic  # explain.semantic.SemanticSimulator, loaded on demand

    def simulate(self, explanation: str, excerpts: list[list[str]]) -> list[list[float]]:
        """Predicted activation (0..10) of every token of every excerpt."""
        rules = parse_rules(explanation)
        if not rules.empty():
            return [simulate_rules(rules, tokens) for tokens in excerpts]
        if self.semantic is None:
            from sparsecircuits.explain.semantic import SemanticSimulator

            self.semantic = SemanticSimulator()
        return self.semantic.simulate(explanation, excerpts)


class OfflineExplainer:
    name = "offline"

    def explain(self, evidence: Evidence) -> str:
        candidates = candidate_rules(evidence)
        if not candidates:
            return "no activation above zero in the excerpts seen"
        excerpts = [evidence.texts(excerpt) for excerpt in evidence.excerpts]
        truth = [excerpt.activations for excerpt in evidence.excerpts]
        best, best_score = None, -2.0
        for rules in candidates:
            simulated = [simulate_rules(rules, tokens) for tokens in excerpts]
            score = correlation(truth, simulated)
            score = -1.0 if score is None else score
            # Shorter wins a near-tie: one token more must earn a point of correlation.
            if score > best_score + 0.01:
                best, best_score = rules, score
        return best.render()


def candidate_rules(evidence: Evidence) -> list[Rules]:
    """Explanations worth trying, simplest first."""
    stats = token_statistics(evidence)
    targets = ranked(stats["target"])
    previous = ranked(stats["previous"])
    following = ranked(stats["next"])
    candidates = [Rules(targets[:k]) for k in range(1, min(MAX_TARGETS, len(targets)) + 1)]
    if evidence.favoured_tokens:
        candidates.append(Rules(list(evidence.favoured_tokens[:MAX_TARGETS])))
    for k in range(1, min(MAX_CONTEXT, len(previous)) + 1):
        candidates.append(Rules(after=previous[:k]))
        for n in (1, 3):
            if len(targets) >= n:
                candidates.append(Rules(targets[:n], after=previous[:k]))
    for k in range(1, min(MAX_CONTEXT, len(following)) + 1):
        candidates.append(Rules(before=following[:k]))
        if targets:
            candidates.append(Rules(targets[:1], before=following[:k]))
    return candidates


def token_statistics(evidence: Evidence) -> dict[str, dict[str, list[float]]]:
    """For the active positions of every excerpt: activation by the token itself, by the one
    before it and by the one after; and, for precision, every occurrence of those tokens."""
    threshold = ACTIVE_FRACTION * evidence.max_activation
    active: dict[str, dict[str, float]] = {"target": {}, "previous": {}, "next": {}}
    for excerpt in evidence.excerpts:
        texts = evidence.texts(excerpt)
        for position, value in enumerate(excerpt.activations):
            if value < threshold or threshold <= 0:
                continue
            neighbours = {
                "target": texts[position],
                "previous": texts[position - 1] if position > 0 else None,
                "next": texts[position + 1] if position + 1 < len(texts) else None,
            }
            for role, text in neighbours.items():
                if text is not None:
                    active[role][text] = active[role].get(text, 0.0) + value
    # Every occurrence of a candidate, active or not: a token that fires one time in ten is a
    # worse explanation than one that fires every time.
    seen: dict[str, dict[str, list[float]]] = {role: defaultdict(list) for role in active}
    for excerpt in evidence.excerpts:
        texts = evidence.texts(excerpt)
        for position, value in enumerate(excerpt.activations):
            for role, shift in (("target", 0), ("previous", -1), ("next", 1)):
                source = position + shift
                if 0 <= source < len(texts) and texts[source] in active[role]:
                    seen[role][texts[source]].append(max(0.0, value))
    return {role: dict(values) for role, values in seen.items()}


def ranked(values: dict[str, list[float]]) -> list[str]:
    """Candidates by mean activation where they occur, weighted towards those seen more often
    (a token seen once at a high value is weaker evidence than one seen ten times)."""

    def weight(item: tuple[str, list[float]]) -> float:
        occurrences = item[1]
        return sum(occurrences) / (len(occurrences) + 1)

    return [text for text, _ in sorted(values.items(), key=weight, reverse=True)][:12]
