"""The task suite: the registry of the 20 tasks of spec section 5 and one harder variant
(single_double_quote_mixed), and their deterministic train/test splits."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass

from sparsecircuits.errors import UserError
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

SPLITS = ("train", "test")
# A prompt belongs to the test split when a hash of its text falls in the first of
# TEST_BUCKETS buckets. A test pair needs both prompts there and a train pair neither, so no
# prompt is ever in both splits, however many pairs are drawn.
TEST_BUCKETS = 3


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise UserError(f"unknown task {name} (see `sparsecircuits tasks list`)")
    return TASKS[name]


def in_test_split(prompt: str) -> bool:
    return hashlib.sha256(prompt.encode("utf-8")).digest()[0] % TEST_BUCKETS == 0


def task_pairs(name: str, split: str = "test", n: int = 256, seed: int = 0) -> list[TaskPair]:
    """n distinct pairs of a task, the same for the same (name, split, seed)."""
    task = get_task(name)
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r} (choose train or test)")
    if n < 1:
        raise UserError(f"the number of pairs must be at least 1, got {n}")
    rng = random.Random(f"{name}/{split}/{seed}")
    wanted = split == "test"
    pairs: list[TaskPair] = []
    drawn: set[tuple[str, str]] = set()
    max_draws = 100 * n + 1000  # test pairs are kept about once in TEST_BUCKETS**2 draws
    for _ in range(max_draws):
        pair = task.make_pair(rng)
        key = (pair.prompt_a, pair.prompt_b)
        in_split = in_test_split(pair.prompt_a) == in_test_split(pair.prompt_b) == wanted
        if not in_split or key in drawn:
            continue
        drawn.add(key)
        pairs.append(pair)
        if len(pairs) == n:
            return pairs
    raise RuntimeError(
        f"task {name} gave only {len(pairs)} distinct {split} pairs in {max_draws} draws"
    )
