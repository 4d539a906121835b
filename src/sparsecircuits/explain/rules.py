"""Explanations that name tokens, and the simulation they imply.

An explanation quotes tokens as JSON strings (so a leading space, a newline or a quote stays
visible: `" self"`, `"\\n"`, `"\\""`) and may say where they count:

    the tokens " self" or "cls", after "(" or ","
    any token after "def"
    the token "(", before ")"

Quoted strings before the first "after" / "before" are the targets (strongest first); those
after "after" must be the previous token, those after "before" the next one. This grammar is
what the offline explainer writes and what the offline simulator reads; an LLM's explanation
that quotes tokens is read the same way, and one that quotes none is left to the
sentence-embedding simulator (explain.semantic).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field

QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
KEYWORD = re.compile(r"\b(after|before)\b", re.IGNORECASE)
# How much a weaker match predicts, as a fraction of an exact one.
STRIPPED_MATCH = 0.9
CASELESS_MATCH = 0.7
OUT_OF_CONTEXT = 0.3  # a target seen without its "after"/"before" context


@dataclass
class Rules:
    targets: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    before: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.targets or self.after or self.before)

    def render(self) -> str:
        """The explanation these rules are read from (parse_rules(r.render()) == r)."""
        parts = []
        if self.targets:
            noun = "the token" if len(self.targets) == 1 else "the tokens"
            parts.append(f"{noun} {quote_list(self.targets)}")
        else:
            parts.append("any token")
        if self.after:
            parts.append(f"after {quote_list(self.after)}")
        if self.before:
            parts.append(f"before {quote_list(self.before)}")
        separator = ", " if self.targets else " "
        return parts[0] + "".join(separator + part for part in parts[1:])


def quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def quote_list(texts: list[str]) -> str:
    quoted = [quote(text) for text in texts]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def parse_rules(explanation: str) -> Rules:
    """The quoted tokens of `explanation`, sorted into targets, previous and next tokens."""
    rules = Rules()
    current = rules.targets
    position = 0
    for match in QUOTED.finditer(explanation):
        for keyword in KEYWORD.finditer(explanation, position, match.start()):
            current = rules.after if keyword.group(1).lower() == "after" else rules.before
        position = match.end()
        try:
            text = json.loads(match.group(0))
        except json.JSONDecodeError:
            text = match.group(0)[1:-1]
        if text and text not in current:
            current.append(text)
    return rules


def match_strength(token: str, wanted: str) -> float:
    """1 for the same token, less for the same word with other spacing or case, else 0."""
    if token == wanted:
        return 1.0
    bare, wanted_bare = token.strip(), wanted.strip()
    if not bare or not wanted_bare:
        return 0.0  # whitespace tokens count only when exactly the same
    if bare == wanted_bare:
        return STRIPPED_MATCH
    if bare.lower() == wanted_bare.lower():
        return CASELESS_MATCH
    return 0.0


def best_match(token: str, wanted: list[str]) -> tuple[float, int]:
    """The strongest match of `token` among `wanted` and its rank there (-1: none)."""
    best, rank = 0.0, -1
    for i, candidate in enumerate(wanted):
        strength = match_strength(token, candidate)
        if strength > best:
            best, rank = strength, i
    return best, rank


def simulate_rules(rules: Rules, tokens: list[str]) -> list[float]:
    """Predicted activation (0..10) of every token of one excerpt under `rules`."""
    return RulesSimulation(rules)(tokens)


class RulesSimulation:
    """`rules` as a predictor, its token matches cached: simulate many excerpts with one."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.target = matcher(rules.targets, ranked=True)
        self.after = matcher(rules.after, ranked=False)
        self.before = matcher(rules.before, ranked=False)
        self.out_of_context = OUT_OF_CONTEXT if rules.targets else 0.0

    def __call__(self, tokens: list[str]) -> list[float]:
        rules, predicted = self.rules, []
        for position, token in enumerate(tokens):
            strength = self.target(token) if rules.targets else 1.0
            if strength and rules.after:
                context = self.after(tokens[position - 1]) if position > 0 else 0.0
                strength *= max(context, self.out_of_context)
            if strength and rules.before:
                following = position + 1 < len(tokens)
                context = self.before(tokens[position + 1]) if following else 0.0
                strength *= max(context, self.out_of_context)
            predicted.append(10.0 * strength)
        return predicted


def matcher(wanted: list[str], ranked: bool):  # noqa: ANN201 (a cached function)
    """Match strength of a token against `wanted`, cached per distinct token. Targets are
    `ranked`: listed strongest first, the last predicts half of the first."""

    @functools.cache
    def strength(token: str) -> float:
        value, rank = best_match(token, wanted)
        if rank < 0:
            return 0.0
        return value * (1.0 - 0.5 * rank / max(1, len(wanted) - 1)) if ranked else value

    return strength
