"""Which tokens of a pair's two prompts differ, and which correspond: one alignment for every
analysis that compares a clean (A) prompt with its corrupted (B) partner.

The prompts of a pair differ in a few tokens, but not always in place: an inserted or deleted
token shifts everything after it. Comparing position by position from the start then calls the
whole shifted tail "different" (causal tracing noised the last token of most such pairs), and
comparing from the end pairs each token of the preamble with its neighbour (activation patching
put a clean state at the wrong corrupted token). A token-level diff (difflib's longest matching
blocks, autojunk off so frequent tokens such as spaces still match) finds what really changed;
only where both prompts have the same length and comparing token for token marks fewer tokens
(a swap of two names, which the diff reads as a move) is that reading used instead.

Both prompts end where the answer goes, so their last tokens are paired by construction and only
what comes before them is diffed: an edit near the end can never pair the answer position with
another token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

NO_COUNTERPART = -1


@dataclass(frozen=True)
class PairAlignment:
    """The diff of one pair, in positions of its two prompts.

    `differing`: the clean positions that changed, oldest first: replaced and deleted tokens,
    and for tokens inserted into the corrupted prompt the clean token they follow (an insertion
    has no clean token of its own; the clean prompt goes on differently right after that one),
    unless they come right before a differing last token, which then stands for them.
    `counterpart[j]`: the clean position aligned to corrupted position j, NO_COUNTERPART where
    there is none (an inserted token, or one of a replacement of another length).
    """

    differing: tuple[int, ...]
    counterpart: tuple[int, ...]

    @property
    def matches(self) -> dict[int, int]:
        """corrupted position -> clean position, for the positions that have a counterpart."""
        return {j: i for j, i in enumerate(self.counterpart) if i != NO_COUNTERPART}


def align_prompts(clean: Sequence[int], corrupted: Sequence[int]) -> PairAlignment:
    """Align the token ids of a clean prompt and its corrupted partner (see the module doc).

    Equal tokens are aligned one to one, and so are the tokens of a replacement that keeps the
    length (a substitution such as `('` -> `("`): the changed token's clean state is exactly
    what activation patching must be able to put back. A replacement of another length, an
    insertion or a deletion has no token-to-token correspondence and is left unaligned.
    """
    if not clean or not corrupted:
        raise ValueError("cannot align an empty prompt")
    clean, corrupted = list(clean), list(corrupted)
    head = len(clean) - 1  # the tokens before the answer position
    last_differs = clean[-1] != corrupted[-1]
    differing, counterpart, insertions = diff_alignment(clean[:-1], corrupted[:-1])
    for point in insertions:
        # An insertion is marked at the clean token before it (the first one, at the start),
        # except right before a differing last token: `else` -> `e`, `lif` is one change there.
        if not (point == head and last_differs):
            differing.add(max(point - 1, 0))
    if len(clean) == len(corrupted):
        # Longest matching blocks read a swap (`a, b = b, a` against `b, a = a, b`) as a move:
        # one name matched across, its neighbours marked instead. Where the prompts keep their
        # length and token-for-token substitution marks fewer tokens, that is the reading.
        substituted = {i for i in range(head) if clean[i] != corrupted[i]}
        if len(substituted) < len(differing):
            differing, counterpart = substituted, list(range(head))
    # The answer positions: paired whatever their tokens. Different last tokens (else / elif)
    # are a substitution at the answer position, so the clean one also counts as differing.
    counterpart.append(head)
    if last_differs:
        differing.add(head)
    return PairAlignment(tuple(sorted(differing)), tuple(counterpart))


def diff_alignment(clean: list[int], corrupted: list[int]) -> tuple[set[int], list[int], set[int]]:
    """From difflib's opcodes of two token lists (either may be empty): the clean positions
    replaced or deleted, the counterpart of each corrupted position, and the clean positions
    before which tokens were inserted."""
    counterpart = [NO_COUNTERPART] * len(corrupted)
    differing: set[int] = set()
    insertions: set[int] = set()
    matcher = SequenceMatcher(None, clean, corrupted, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            for offset in range(i2 - i1):
                counterpart[j1 + offset] = i1 + offset
        if tag in ("replace", "delete"):
            differing.update(range(i1, i2))
        elif tag == "insert":
            insertions.add(i1)
    return differing, counterpart, insertions
