"""Control tasks: generated like the real tasks, but the answer follows from the prompt by a
rule that means nothing in Python.

A control that cannot fail proves nothing: swapping the answers of a random half of the pairs
leaves no rule to find, so no circuit and not even the full model beats chance there. The
critique of weight-sparse circuits ("may be interpretable yet unfaithful", 2026) asks for a
nonsense rule that IS learnable from the prompt, for which pruning may assemble a "circuit"
from whatever nodes happen to correlate with it. `nonsense_name_split` is one: a line starts
with a variable name, and whether ` =` or `.` comes next is decided by a fixed, arbitrary
split of the names (a hash of the name), the same in every pair and every split. A trained
model has no reason to follow it; a circuit that does is pruning's construction, which is what
the acceptance guard (circuits.acceptance) must tell apart from a real circuit.
"""

from __future__ import annotations

import hashlib
import random

from sparsecircuits.tasks.pairs import TaskPair
from sparsecircuits.tasks.templates_context import VARIABLES, function_name, scope


def name_half(name: str) -> int:
    """0 or 1: the arbitrary half of the variable names `name` falls in (fixed by its hash)."""
    return hashlib.sha256(f"nonsense/{name}".encode()).digest()[0] % 2


ASSIGNED_NAMES = tuple(name for name in VARIABLES if name_half(name) == 0)
ATTRIBUTE_NAMES = tuple(name for name in VARIABLES if name_half(name) == 1)


def nonsense_name_split(rng: random.Random) -> TaskPair:
    """A line that starts with a name from each half: ` =` follows a name of the first half,
    `.` one of the second, whatever the code around it says."""
    s = scope(rng)
    assigned, attribute = rng.choice(ASSIGNED_NAMES), rng.choice(ATTRIBUTE_NAMES)
    value = f"{function_name(rng)}()"
    return TaskPair(
        prompt_a=s.then(assigned),
        prompt_b=s.then(attribute),
        answer_a=f" = {value}\n",
        answer_b=f".{function_name(rng)}()\n",
    )
