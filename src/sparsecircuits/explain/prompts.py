"""Prompts for an LLM explainer and simulator, and reading their answers.

The explainer sees (token, activation) pairs of the top excerpts, one per line as
`token<TAB>activation` on the paper's 0..10 scale, and completes one sentence. When fewer than
a fifth of the tokens are non-zero, the non-zero pairs are repeated after the full list (the
paper's trick: the model should not miss them).

Two simulators:
- all at once, with prompt log-probabilities: the excerpt is written with every activation
  "unknown" after a few-shot example whose values switch from "unknown" to real numbers at a
  random position; at each "unknown" the server's top log-probabilities over "0".."10" give an
  expected value. Needs a server that returns prompt logprobs (`/v1/completions` with
  `echo` and `logprobs`: vLLM and llama.cpp do; hosted chat APIs mostly do not).
- JSON, without log-probabilities: the model answers `[[token, activation], ...]` at
  temperature 0; when its tokens do not line up with the excerpt's, they predict 0 and the
  answer counts as malformed.
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass

from sparsecircuits.errors import UserError
from sparsecircuits.explain.offline import Evidence
from sparsecircuits.explain.records import Excerpt
from sparsecircuits.explain.scoring import to_scale
from sparsecircuits.validation import parse_json

EXPLAIN_SYSTEM = (
    "We study units inside a neural network language model. Each unit responds to something "
    "particular in a short text. Below are texts with the unit's response to every token, one "
    "token per line as token<TAB>activation, from 0 (no response) to 10 (strongest). Say in "
    "one short sentence what the unit responds to. Name the tokens or the kind of context; "
    "do not list every example."
)
EXPLAIN_LEAD = "The unit responds to"
SIMULATE_SYSTEM = (
    "We study units inside a neural network language model. Given an explanation of what a "
    "unit responds to, predict its activation, from 0 (none) to 10 (strongest), on every "
    "token of a text."
)
UNKNOWN = "unknown"
SPARSE_FRACTION = 0.2  # below this share of non-zero tokens, repeat the non-zero ones
# A worked example for the all-at-once simulator's prompt: a unit for the word "return".
FEW_SHOT_EXPLANATION = 'the keyword "return" at the start of a statement'
FEW_SHOT = [
    ("def", 0), (" f", 0), ("(x", 0), ("):", 0), ("\n   ", 0), (" return", 10), (" x", 1),
    ("\n", 0), ("if", 0), (" y", 0), (":", 0), ("\n   ", 0), (" return", 9), (" None", 0),
]  # fmt: skip


def format_pairs(tokens: list[str], values: list[int]) -> str:
    return "\n".join(f"{show(token)}\t{value}" for token, value in zip(tokens, values, strict=True))


def show(token: str) -> str:
    """A token on one line: newlines and tabs escaped, everything else as it is."""
    return token.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


def explanation_messages(evidence: Evidence, n_excerpts: int = 5) -> list[dict]:
    user = excerpt_blocks(evidence, evidence.top[:n_excerpts], "Text")
    user += f"\n\nComplete in one sentence: {EXPLAIN_LEAD} ..."
    return [{"role": "system", "content": EXPLAIN_SYSTEM}, {"role": "user", "content": user}]


def revision_messages(
    evidence: Evidence, old: str, probes: list[Excerpt], n_excerpts: int = 5
) -> list[dict]:
    """The explainer's evidence again, its old explanation, and texts that explanation says
    should activate the unit with what the unit really did there."""
    user = excerpt_blocks(evidence, evidence.top[:n_excerpts], "Text")
    user += (
        f"\n\nAn earlier explanation said: the unit responds to {old}.\nHere are texts where "
        "that explanation predicts a response, with the unit's true activations:\n\n"
    )
    user += excerpt_blocks(evidence, probes, "Test text")
    user += (
        "\n\nWhere the earlier explanation was wrong, correct it. Complete in one sentence: "
        f"{EXPLAIN_LEAD} ..."
    )
    return [{"role": "system", "content": EXPLAIN_SYSTEM}, {"role": "user", "content": user}]


def excerpt_blocks(evidence: Evidence, excerpts: list[Excerpt], label: str) -> str:
    blocks = []
    for number, excerpt in enumerate(excerpts, start=1):
        tokens = evidence.texts(excerpt)
        values = to_scale(excerpt.activations, evidence.max_activation)
        block = f"{label} {number}:\n<start>\n{format_pairs(tokens, values)}\n<end>"
        nonzero = [(t, v) for t, v in zip(tokens, values, strict=True) if v > 0]
        if nonzero and len(nonzero) < SPARSE_FRACTION * len(tokens):
            repeated = format_pairs([t for t, _ in nonzero], [v for _, v in nonzero])
            block += f"\nThe same text, non-zero activations only:\n<start>\n{repeated}\n<end>"
        blocks.append(block)
    return "\n\n".join(blocks)


def read_explanation(text: str) -> str | None:
    """The sentence an explainer answered, without the lead it repeated; None if empty."""
    sentence = text.strip().strip('"').strip()
    if sentence.lower().startswith(EXPLAIN_LEAD.lower()):
        sentence = sentence[len(EXPLAIN_LEAD) :].strip()
    sentence = sentence.split("\n")[0].strip().rstrip(".")
    return sentence or None


@dataclass
class AllAtOncePrompt:
    text: str
    unknown_offsets: list[int]  # character offset of each "unknown" of the target excerpt


def all_at_once_prompt(explanation: str, tokens: list[str], seed: int = 0) -> AllAtOncePrompt:
    """The few-shot example (values known from a random position on) and the target excerpt
    with every value unknown."""
    switch = random.Random(seed).randrange(1, len(FEW_SHOT))
    example = "\n".join(
        f"{show(token)}\t{UNKNOWN if i < switch else value}"
        for i, (token, value) in enumerate(FEW_SHOT)
    )
    head = (
        f"{SIMULATE_SYSTEM}\n\nUnit 1 responds to {FEW_SHOT_EXPLANATION}.\n"
        f"Activations:\n<start>\n{example}\n<end>\n\n"
        f"Unit 2 responds to {explanation}.\nActivations:\n<start>\n"
    )
    text, offsets = head, []
    for token in tokens:
        text += f"{show(token)}\t"
        offsets.append(len(text))
        text += f"{UNKNOWN}\n"
    return AllAtOncePrompt(text + "<end>\n", offsets)


def expected_values(top_logprobs: list[dict[str, float] | None]) -> list[float]:
    """Expected activation at each position from the log-probabilities of "0".."10"."""
    values = []
    for candidates in top_logprobs:
        weights = {}
        for token, logprob in (candidates or {}).items():
            stripped = token.strip()
            if stripped.isdigit() and 0 <= int(stripped) <= 10:
                weights[int(stripped)] = weights.get(int(stripped), 0.0) + math.exp(logprob)
        total = sum(weights.values())
        values.append(sum(v * w for v, w in weights.items()) / total if total else 0.0)
    return values


def json_simulation_messages(explanation: str, tokens: list[str]) -> list[dict]:
    listing = json.dumps(tokens, ensure_ascii=False)
    user = (
        f"Explanation: the unit responds to {explanation}.\n"
        f"Tokens (a JSON list): {listing}\n"
        "Answer with a JSON list of [token, activation] pairs, one per token in the same "
        "order, activation an integer from 0 to 10, and nothing else."
    )
    return [{"role": "system", "content": SIMULATE_SYSTEM}, {"role": "user", "content": user}]


JSON_LIST = re.compile(r"\[.*\]", re.DOTALL)


def read_json_simulation(text: str, tokens: list[str]) -> list[float] | None:
    """The activations of a JSON answer, or None when it does not line up with `tokens`."""
    match = JSON_LIST.search(text)
    if match is None:
        return None
    try:
        pairs = parse_json(match.group(0), object, "simulation answer")
    except UserError:
        return None
    if not isinstance(pairs, list) or len(pairs) != len(tokens):
        return None
    values = []
    for pair, token in zip(pairs, tokens, strict=True):
        if not (isinstance(pair, list) and len(pair) == 2 and pair[0] == token):
            return None
        value = pair[1]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 10:
            return None
        values.append(float(value))
    return values
