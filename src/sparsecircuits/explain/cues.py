"""Where in a text a token stands: the facts a prose explanation talks about.

Every function takes one excerpt's tokens (strings, spaces kept) and returns one strength in
0..1 per token: inside brackets, quotes or a comment; at the start or end of a line or
sentence; next to a token of some kind; seen earlier in the excerpt (as a word or as part of
a phrase). Code roles are in explain.code_cues, arithmetic in explain.arithmetic; explain.prose
combines them into a simulation.
"""

from __future__ import annotations

from collections.abc import Callable

from sparsecircuits.explain.vocabulary import (
    BRACKET_PAIRS,
    QUOTE_CHARACTERS,
    SENTENCE_ENDS,
    bare,
    is_word,
)

Strengths = list[float]
TokenTest = Callable[[str], float]
Factor = Callable[[list[str]], Strengths]  # one excerpt's tokens -> strength per token
LATER_ON_LINE = 0.6  # "after X" at a later token of X's line, not right after it


def is_space(token: str) -> bool:
    return token.strip() == ""


def starts_line(token: str) -> bool:
    """A token after which a new line starts: one that ends in a newline and spaces."""
    return "\n" in token and token[token.rindex("\n") + 1 :].strip() == ""


# --- spans -----------------------------------------------------------------------------------


def inside_brackets(tokens: list[str], opener: str) -> Strengths:
    """1 strictly between `opener` and its closing bracket (nesting counted)."""
    closer, depth, out = BRACKET_PAIRS[opener], 0, []
    for token in tokens:
        text = token.strip()
        if text == closer and depth:
            depth -= 1
        out.append(1.0 if depth and text != opener else 0.0)
        if text == opener:
            depth += 1
    return out


def is_quote(token: str) -> bool:
    text = token.strip()
    return bool(text) and all(character in QUOTE_CHARACTERS for character in text)


def inside_quotes(tokens: list[str]) -> Strengths:
    """1 between a quote mark and the next one (a string literal's text)."""
    inside, out = False, []
    for token in tokens:
        if is_quote(token):
            inside = not inside
            out.append(0.0)
        else:
            out.append(1.0 if inside else 0.0)
        if starts_line(token) and not token.strip():
            inside = False  # a string does not run past its line
    return out


def inside_comment(tokens: list[str]) -> Strengths:
    """1 after a "#" that is not inside a string, to the end of its line."""
    quoted, inside, out = inside_quotes(tokens), False, []
    for token, in_string in zip(tokens, quoted, strict=True):
        if "\n" in token:
            inside = False
        out.append(1.0 if inside else 0.0)
        if token.strip().startswith("#") and not in_string:
            inside = True
    return out


# --- lines and sentences ---------------------------------------------------------------------


def line_starts(tokens: list[str], skip_space: bool = True) -> Strengths:
    """1 at the first token of each line after the excerpt's first newline (an excerpt
    begins mid-document, so its first token is not known to start a line); `skip_space`:
    the first token after the indentation."""
    waiting, out = False, []
    for token in tokens:
        hit = waiting and (not skip_space or not is_space(token))
        out.append(1.0 if hit and not is_space(token) else 0.0)
        if hit:
            waiting = False
        if starts_line(token):
            waiting = True
    return out


def indentation(tokens: list[str]) -> Strengths:
    """1 at whitespace tokens that open a line."""
    out, previous_newline = [], False
    for token in tokens:
        out.append(1.0 if previous_newline and is_space(token) and token else 0.0)
        previous_newline = starts_line(token) or (previous_newline and is_space(token))
    return out


def line_ends(tokens: list[str]) -> Strengths:
    """1 at the last non-space token before a newline."""
    out = [0.0] * len(tokens)
    for i in range(len(tokens) - 1):
        if not is_space(tokens[i]) and tokens[i + 1].lstrip(" \t").startswith("\n"):
            out[i] = 1.0
    return out


def sentence_end_marks(tokens: list[str]) -> list[bool]:
    """Full stops, question and exclamation marks that end a sentence: followed by a space,
    a newline or nothing (not "3.14", not "os.path")."""
    marks = []
    for i, token in enumerate(tokens):
        following = tokens[i + 1] if i + 1 < len(tokens) else " "
        marks.append(token.strip() in SENTENCE_ENDS and following[:1].isspace())
    return marks


def sentence_ends(tokens: list[str]) -> Strengths:
    """1 at the last word before a sentence-ending mark."""
    marks = sentence_end_marks(tokens)
    out = [0.0] * len(tokens)
    for i in range(len(tokens) - 1):
        if marks[i + 1] and is_word(tokens[i]):
            out[i] = 1.0
    return out


def sentence_starts(tokens: list[str]) -> Strengths:
    """1 at the first word after a sentence-ending mark or a newline, and at the excerpt's
    first word when it is capitalised (an excerpt may begin mid-sentence)."""
    first = tokens[0].strip()[:1].isupper() if tokens else False
    marks, waiting, out = sentence_end_marks(tokens), first, []
    for token, mark in zip(tokens, marks, strict=True):
        hit = waiting and is_word(token)
        out.append(1.0 if hit else 0.0)
        if hit:
            waiting = False
        if mark or starts_line(token):
            waiting = True
    return out


def first_token(tokens: list[str]) -> Strengths:
    out = [0.0] * len(tokens)
    for i, token in enumerate(tokens):
        if not is_space(token):
            out[i] = 1.0
            break
    return out


# --- neighbours ------------------------------------------------------------------------------


def neighbour(test: TokenTest, shift: int, same_line: bool) -> Factor:
    """The token `shift` places away matches (`same_line`: or, for "after", any earlier token
    of the same line does, a little less)."""

    def factor(tokens: list[str]) -> list[float]:
        out = []
        for i in range(len(tokens)):
            j = i + shift
            value = test(tokens[j]) if 0 <= j < len(tokens) else 0.0
            if not value and same_line and shift < 0:
                for k in range(i - 1, -1, -1):
                    if "\n" in tokens[k]:
                        break
                    if test(tokens[k]):
                        value = LATER_ON_LINE
                        break
            out.append(value)
        return out

    return factor


def either_side(test: TokenTest) -> Factor:
    """The token before or the one after matches ("items separated by commas")."""

    def factor(tokens: list[str]) -> list[float]:
        out = []
        for i in range(len(tokens)):
            sides = [tokens[j] for j in (i - 1, i + 1) if 0 <= j < len(tokens)]
            out.append(max((test(side) for side in sides), default=0.0))
        return out

    return factor


def same_as_previous(tokens: list[str]) -> Strengths:
    """1 at a word that repeats the word right before it ("the the")."""
    out, previous = [], ""
    for token in tokens:
        word = bare(token)
        out.append(1.0 if word and word == previous and is_word(token) else 0.0)
        previous = word or previous
    return out


def quote_marks(tokens: list[str], opening: bool) -> Strengths:
    """1 at the quote marks that open (or close) a string."""
    out, inside = [], False
    for token in tokens:
        hit = is_quote(token) and inside != opening
        out.append(1.0 if hit else 0.0)
        if is_quote(token):
            inside = not inside
    return out


# --- repetition ------------------------------------------------------------------------------


# A repeated phrase's strength by how many tokens of it, ending here, were seen before: one
# repeated word alone is weak evidence of a repeated phrase.
PHRASE_STRENGTH = (0.0, 0.25, 0.75, 1.0)


def repeat_lengths(words: list[str], later: bool = False) -> list[int]:
    """For each position, the length of the longest run of words ending there that also
    occurs earlier (`later`: later) in the excerpt."""
    lengths = []
    for i in range(len(words)):
        best = 0
        for length in range(1, i + 2):
            run = words[i - length + 1 : i + 1]
            if not run[0]:
                break
            starts = range(i + 1, len(words) - length + 1) if later else range(i - length + 1)
            if not any(words[j : j + length] == run for j in starts):
                break
            best = length
        lengths.append(best)
    return lengths


def repeated(tokens: list[str], phrase: bool, later: bool = False) -> Strengths:
    """Seen earlier in the excerpt (`later`: seen again later): as a word, or for `phrase`
    as the end of a run of words seen before."""
    words = [bare(token) if not is_space(token) else "" for token in tokens]
    lengths = repeat_lengths(words, later)
    if not phrase:
        return [1.0 if n and is_word(t) else 0.0 for n, t in zip(lengths, tokens, strict=True)]
    return [PHRASE_STRENGTH[min(n, len(PHRASE_STRENGTH) - 1)] for n in lengths]
