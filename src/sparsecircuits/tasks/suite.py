"""The task suite: the registry of the 20 tasks of spec section 5 and one harder variant
(single_double_quote_mixed), and their deterministic train, validation and test splits."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass

from sparsecircuits.errors import UserError
from sparsecircuits.tasks.controls import nonsense_name_split
from sparsecircuits.tasks.pairs import TaskPair
from sparsecircuits.tasks.templates import (
    bracket_brace,
    bracket_counting,
    class_init,
    else_elif,
    enumerate_range,
    final_kwarg,
    for_while,
    fstring_brace,
    if_equals,
    if_ternary,
    indent_for,
    lambda_func,
    set_or_string,
    set_or_string_fixedvarname,
    single_double_quote,
    single_double_quote_mixed,
    var_if,
    var_swap,
    while_return_true,
    with_as,
    with_open,
)


@dataclass(frozen=True)
class Task:
    """One binary task: its name (as in spec section 5), what decides it, its pair generator."""

    name: str
    description: str
    make_pair: Callable[[random.Random], TaskPair]


def describe(make_pair: Callable[[random.Random], TaskPair], description: str) -> Task:
    """A task named after its generator."""
    return Task(make_pair.__name__, description, make_pair)


TASKS: dict[str, Task] = {
    task.name: task
    for task in [
        describe(single_double_quote, "close a string opened by (' or (\" with ') vs \")"),
        describe(
            single_double_quote_mixed,
            "the harder mixed form, not in the paper: the string opens after =, ==, {, ( or a "
            "comma and closes with ' or ') or ':, docstrings may come before",
        ),
        describe(final_kwarg, "=None vs ): the last parameter needs a default if earlier ones had"),
        describe(set_or_string, ".add vs +=: was the variable initialised as set() or ''"),
        describe(set_or_string_fixedvarname, "as set_or_string, the variable is always current"),
        describe(class_init, "copy the right name in self.x = x"),
        describe(with_as, "' as' in a with statement vs a newline after a plain assignment"),
        describe(bracket_brace, ": vs , after the first element of a dict vs a list literal"),
        describe(with_open, "'r' vs 'w' in open(), decided by the file's name (read vs write)"),
        describe(bracket_counting, "] vs ]] by the nesting depth of the list"),
        describe(for_while, "' in' after 'for x' vs ':' after 'while x'"),
        describe(else_elif, "':' after else vs a condition after elif"),
        describe(fstring_brace, "a name after { in an f-string vs 0 in a str.format string"),
        describe(if_ternary, "':' ending an if statement vs ' else' in a ternary expression"),
        describe(var_swap, "predict x in x, y = y, x"),
        describe(indent_for, "the indentation of the line after a for line"),
        describe(lambda_func, "':' after a lambda's argument vs '(' after a def's name"),
        describe(if_equals, "' ==' in an if condition vs ' =' in an assignment"),
        describe(enumerate_range, "enumerate vs range: a loop over two variables or one"),
        describe(var_if, "':' after 'if x == True' vs a newline after 'x = True'"),
        describe(while_return_true, "':' after 'while True' vs a newline after 'return True'"),
    ]
}

# The paper's twenty tasks: the suite less the harder quote variant added here.
PAPER_TASKS = tuple(name for name in TASKS if name != "single_double_quote_mixed")

# Not tasks of the suite: rules with no meaning in Python, for testing that pruning's guard
# rejects what it finds there (tasks.controls). Pairs, splits and --pairs work as for a task.
CONTROL_TASKS: dict[str, Task] = {
    task.name: task
    for task in [
        describe(
            nonsense_name_split,
            "control: ' =' or '.' after a line's first name, by an arbitrary split of the names",
        )
    ]
}

SPLITS = ("train", "validation", "test")
# A prompt's split is decided by a hash of its text alone: bucket 0 of SPLIT_BUCKETS is test,
# bucket 1 validation, the rest train. A pair belongs to a split only when both its prompts do,
# so no prompt is ever in two splits, however many pairs are drawn. Validation pairs choose
# (training-time task losses, model selection, recipe tuning); test pairs only report.
SPLIT_BUCKETS = 3


def get_task(name: str) -> Task:
    """A task of the suite or a control task, by name."""
    task = TASKS.get(name) or CONTROL_TASKS.get(name)
    if task is None:
        raise UserError(f"unknown task {name} (see `sparsecircuits tasks list`)")
    return task


def prompt_split(prompt: str) -> str:
    """The split a prompt belongs to, whatever pair it is drawn in."""
    bucket = hashlib.sha256(prompt.encode("utf-8")).digest()[0] % SPLIT_BUCKETS
    return SPLITS[2 - bucket] if bucket < 2 else "train"


def task_pairs(name: str, split: str = "test", n: int = 256, seed: int = 0) -> list[TaskPair]:
    """n distinct pairs of a task, the same for the same (name, split, seed)."""
    task = get_task(name)
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r} (choose {', '.join(SPLITS)})")
    if n < 1:
        raise UserError(f"the number of pairs must be at least 1, got {n}")
    rng = random.Random(f"{name}/{split}/{seed}")
    pairs: list[TaskPair] = []
    drawn: set[tuple[str, str]] = set()
    max_draws = 100 * n + 1000  # a pair is kept about once in SPLIT_BUCKETS**2 draws
    for _ in range(max_draws):
        pair = task.make_pair(rng)
        key = (pair.prompt_a, pair.prompt_b)
        in_split = prompt_split(pair.prompt_a) == prompt_split(pair.prompt_b) == split
        if not in_split or key in drawn:
            continue
        drawn.add(key)
        pairs.append(pair)
        if len(pairs) == n:
            return pairs
    raise RuntimeError(
        f"task {name} gave only {len(pairs)} distinct {split} pairs in {max_draws} draws"
    )
