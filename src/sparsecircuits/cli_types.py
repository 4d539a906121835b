"""Click parameter types with ranges, shared by every command: a flag outside its range ends in
one usage line, never in a traceback (or, worse, a run that silently does something else).

Leaf module: imports click and the standard library only.
"""

from __future__ import annotations

import math
from pathlib import Path

import click

# Two-way softmax task loss of a model that guesses: ln 2 nats. A circuit that does nothing sits
# there, give or take sampling noise, so a target must stay clear of it to mean anything.
CHANCE_LOSS = math.log(2)
HIGHEST_TARGET_LOSS = round(CHANCE_LOSS - 0.05, 3)


class FiniteFloat(click.FloatRange):
    """A float in a range that is also a real number (NaN compares false to every bound)."""

    name = "float"

    def convert(self, value, param, ctx):  # noqa: ANN001 (click's signature)
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


DEVICE_OPTION = {
    "default": "cpu",
    "show_default": True,
    "help": "cpu, cuda or cuda:N: where the model runs.",
}


class OutputPath(click.Path):
    """A path the command will create: never empty."""

    def __init__(self) -> None:
        super().__init__(path_type=Path)

    def convert(self, value, param, ctx):  # noqa: ANN001
        if isinstance(value, str) and not value.strip():
            self.fail("the path is empty", param, ctx)
        return super().convert(value, param, ctx)


POSITIVE_INT = click.IntRange(min=1)
SEED = click.IntRange(min=0)
FRACTION = FiniteFloat(min=0, max=1, min_open=True)  # (0, 1]: kept fractions
UNIT_INTERVAL = FiniteFloat(min=0, max=1)  # [0, 1]
POSITIVE_FLOAT = FiniteFloat(min=0, min_open=True)
TARGET_LOSS = FiniteFloat(min=0, max=HIGHEST_TARGET_LOSS, min_open=True, max_open=True)
