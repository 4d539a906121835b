"""`sparsecircuits train`: its options are the flag table of flags.py."""

from __future__ import annotations

from pathlib import Path

import click

from sparsecircuits.cli_types import POSITIVE_INT, OutputPath
from sparsecircuits.train.flags import build_train_configs, training_options
from sparsecircuits.train.trainer import TrainResult
from sparsecircuits.train.trainer import train as run_training


@click.command()
@click.option("--preset", default=None, help="tiny, small or paper (default small).")
@click.option(
    "--out",
    "out",
    required=True,
    type=OutputPath(),
    help="Run directory (checkpoints, metrics, plots).",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly where it stopped.")
@click.option("--tokens", type=POSITIVE_INT, help="Token budget (sets --steps).")
@training_options
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(
    preset: str | None, out: Path, resume: bool, tokens: int | None, quiet: bool, **flags: object
) -> None:
    """Train a weight-sparse (or, with --density 1, dense) GPT."""
    model_config, train_config = build_train_configs(preset, out, resume, tokens, flags)
    result = run_training(model_config, train_config, out, resume=resume, progress=not quiet)
    click.echo(
        f"trained {result.steps} steps ({result.tokens:,} tokens) into {out}: "
        f"validation loss {result.val_loss:.4f} nats/token, {training_speed(result)}, "
        f"{result.seconds:.0f} s"
    )


def training_speed(result: TrainResult) -> str:
    """Tokens/s of a training call; a resumed run that was already complete trained none."""
    if result.tokens_per_second > 0:
        return f"{result.tokens_per_second:,.0f} tokens/s"
    return "already fully trained"
