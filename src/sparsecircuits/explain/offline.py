"""The offline explainer and simulator: no server, no network, a few milliseconds a unit.

The explainer reads the evidence a person would: on the explain half's excerpts, which tokens
the unit fires on, which tokens come right before and after them, and (for a first-layer unit)
which tokens its input weights favour. It writes candidate explanations in the quoted-token
grammar of explain.rules (a few tokens; tokens after a context; any token after or before
one), simulates each on the explain half only, and keeps the one whose simulation matches
best, preferring the shorter at a tie. The scoring half is never seen, so its scores are
honest.

The simulator reads an explanation alone: one in the quoted-token grammar goes through
explain.rules; any other (a person's or an LLM's prose) is read by explain.prose, which
understands context, position, repetition and word classes and leaves kinds of word by
meaning to sentence embeddings (explain.semantic).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from sparsecircuits.explain.prose import read, simulate_reading
from sparsecircuits.explain.records import Excerpt
from sparsecircuits.explain.rules import QUOTED, Rules, RulesSimulation, parse_rules
from sparsecircuits.explain.scoring import ACTIVE_FRACTION, correlation

MAX_TARGETS = 6  # tokens an explanation names at most: a sentence, not a lookup table
MAX_CONTEXT = 3
GRAMMAR_WORDS = {"the", "token", "tokens", "any", "or", "after", "before"}
IN_SAMPLE_PENALTY = 0.3  # correlation an in-sample fit loses against a held-out one
# Kinds of words the explainer can name instead of listing tokens, when a sentence-embedding
# model is at hand (explain.semantic): a unit for colours should be "words that name colors",
# not the four colours it happened to see.
CATEGORIES = (
    "words that name colors",
    "names of animals",
    "food and drink",
    "words for feelings and emotions",
    "parts of the human body",
    "members of a family",
    "numbers, written in digits or in words",
    "names of months and days of the week",
    "words about time and dates",
    "names of countries and cities",
    "names of people",
    "jobs and professions",
    "weather words",
    "items of clothing",
    "pieces of furniture and household objects",
    "vehicles and ways to travel",
    "tools and instruments",
    "plants and trees",
    "verbs of movement",
    "verbs in the past tense",
    "words describing size",
    "pronouns",
    "prepositions",
    "words for negation",
    "question words",
    "money and prices",
    "sports and games",
    "music and sound",
    "computers and software",
    "names of exceptions and errors",
    "Python keywords",
    "names of built-in Python functions",
    "words about files and paths",
    "words about testing and assertions",
    "words about strings and text",
    "words about networks and sockets",
    "words about dates and times in code",
    "mathematical words",
    "words about errors and failure",
    "words about reading and writing data",
)


@dataclass
class Evidence:
    """What the explainer sees of one unit: excerpts of the explain half, as token strings."""

    unit: str
    top: list[Excerpt]  # highest max activation first
    random: list[Excerpt]  # a uniform sample
    token_texts: Sequence[str]  # token id -> its text
    max_activation: float
    favoured_tokens: list[str] | None = None  # by input weights (first-layer units)
    # Token strings of each excerpt, built once: candidates are scored on them many times.
    text_cache: dict[int, tuple[Excerpt, list[str]]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @property
    def excerpts(self) -> list[Excerpt]:
        return self.top + self.random

    def texts(self, excerpt: Excerpt) -> list[str]:
        cached = self.text_cache.get(id(excerpt))
        if cached is None or cached[0] is not excerpt:
            cached = (excerpt, [self.token_texts[token] for token in excerpt.tokens])
            self.text_cache[id(excerpt)] = cached
        return cached[1]


class OfflineSimulator:
    name = "offline"

    def __init__(self, semantic=None) -> None:
        self.semantic = semantic  # explain.semantic.SemanticSimulator, loaded on demand

    def simulate(self, explanation: str, excerpts: list[list[str]]) -> list[list[float]]:
        """Predicted activation (0..10) of every token of every excerpt."""
        rules = parse_rules(explanation)
        if not rules.empty() and in_rules_grammar(explanation):
            simulation = RulesSimulation(rules)
            return [simulation(tokens) for tokens in excerpts]
        return simulate_reading(read(explanation), excerpts, self.semantic_model)

    def semantic_model(self):  # noqa: ANN201 (explain.semantic.SemanticSimulator)
        if self.semantic is None:
            from sparsecircuits.explain.semantic import shared_semantic

            self.semantic = shared_semantic()
        return self.semantic


def in_rules_grammar(explanation: str) -> bool:
    """Whether the explanation says no more than explain.rules reads: quoted tokens joined by
    "the token(s)", "any token", "or", "after", "before" (anything else is prose)."""
    rest = QUOTED.sub(" ", explanation).lower()
    return set(re.findall(r"[^\s,.]+", rest)) <= GRAMMAR_WORDS


class OfflineExplainer:
    """Chooses among candidate explanations by two-fold cross-validation on the evidence: each
    recipe ("the 3 strongest tokens", "the strongest token after the 2 strongest previous
    tokens", ...) is built from one half of the excerpts and scored on the other, so a recipe
    that only memorises the excerpts it saw loses to one that generalises. The winner is then
    built from all the evidence."""

    name = "offline"

    def __init__(self, semantic=None, categories: bool = True) -> None:  # noqa: ANN001
        self.semantic = semantic  # explain.semantic.SemanticSimulator, loaded on first use
        self.categories = categories

    def candidates(self, evidence: Evidence) -> dict[tuple, Rules]:
        return candidate_rules(evidence)

    def explain(self, evidence: Evidence) -> str:
        everything = self.candidates(evidence)
        if not everything:
            return "no activation above zero in the excerpts seen"
        rules_text, rules_score = self.best_rules(evidence, everything)
        if not self.categories:
            return rules_text
        category, category_score = self.best_category(evidence)
        # A category needs a clear margin: "the token X" is the sharper claim.
        return category if category_score > rules_score + 0.05 else rules_text

    def revise(self, evidence: Evidence, old: str, probes: list[Excerpt]) -> str:
        """Explain again with the probes among the evidence: where the old explanation fired
        falsely they are counterexamples the cross-validation sees."""
        return self.explain(replace(evidence, random=evidence.random + probes))

    def best_category(self, evidence: Evidence) -> tuple[str, float]:
        """The built-in category whose simulation fits the evidence best (no fitting, so its
        fit on all the evidence is an honest estimate)."""
        if self.semantic is None:
            from sparsecircuits.explain.semantic import shared_semantic

            self.semantic = shared_semantic()
        excerpts = [evidence.texts(excerpt) for excerpt in evidence.excerpts]
        truth = [excerpt.activations for excerpt in evidence.excerpts]
        simulator = OfflineSimulator(self.semantic)  # the one that will score the category
        best, best_score = CATEGORIES[0], -1.0
        for category in CATEGORIES:
            score = correlation(truth, simulator.simulate(category, excerpts))
            if score is not None and score > best_score:
                best, best_score = category, score
        return best, best_score

    def best_rules(self, evidence: Evidence, everything: dict[tuple, Rules]) -> tuple[str, float]:
        folds = split_evidence(evidence)
        scores: dict[tuple, list[float]] = {recipe: [] for recipe in everything}
        if all(len(fold.excerpts) >= 2 for fold in folds):
            for seen, held_out in (folds, folds[::-1]):
                for recipe, rules in self.candidates(seen).items():
                    score = fit(rules, held_out)
                    if recipe in scores and score is not None:
                        scores[recipe].append(score)
        best, best_score = None, -2.0
        for recipe, rules in everything.items():
            held_out = scores[recipe]
            # A recipe that could not be scored on a held-out half (not built there, or the
            # half never fired) is scored on the evidence it was built from, a point lower:
            # in-sample fit is worth less than held-out fit.
            in_sample = fit(rules, evidence)
            fallback = -2.0 if in_sample is None else in_sample - IN_SAMPLE_PENALTY
            score = sum(held_out) / len(held_out) if held_out else fallback
            # Simpler recipes come first: one more condition must earn 0.01 of correlation.
            if score > best_score + 0.01:
                best, best_score = rules, score
        return best.render(), best_score


def fit(rules: Rules, evidence: Evidence) -> float | None:
    """Correlation of the rules' simulation with the evidence's activations (None when the
    evidence never fires)."""
    simulation = RulesSimulation(rules)
    simulated = [simulation(evidence.texts(excerpt)) for excerpt in evidence.excerpts]
    return correlation([excerpt.activations for excerpt in evidence.excerpts], simulated)


def split_evidence(evidence: Evidence) -> tuple[Evidence, Evidence]:
    """Two halves of the evidence, alternating through the top and the random excerpts."""
    return tuple(
        Evidence(
            evidence.unit,
            evidence.top[half::2],
            evidence.random[half::2],
            evidence.token_texts,
            evidence.max_activation,
            evidence.favoured_tokens,
        )
        for half in (0, 1)
    )


def candidate_rules(evidence: Evidence) -> dict[tuple, Rules]:
    """Explanations worth trying, by recipe, simplest first."""
    stats = token_statistics(evidence)
    targets = ranked(stats["target"])
    previous = ranked(stats["previous"])
    following = ranked(stats["next"])
    candidates = {
        ("targets", k): Rules(targets[:k]) for k in range(1, min(MAX_TARGETS, len(targets)) + 1)
    }
    if evidence.favoured_tokens:
        candidates[("favoured",)] = Rules(list(evidence.favoured_tokens[:MAX_TARGETS]))
    for k in range(1, min(MAX_CONTEXT, len(previous)) + 1):
        candidates[("after", k)] = Rules(after=previous[:k])
        for n in (1, 3):
            if len(targets) >= n:
                candidates[("targets after", n, k)] = Rules(targets[:n], after=previous[:k])
    for k in range(1, min(MAX_CONTEXT, len(following)) + 1):
        candidates[("before", k)] = Rules(before=following[:k])
        if targets:
            candidates[("target before", k)] = Rules(targets[:1], before=following[:k])
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
