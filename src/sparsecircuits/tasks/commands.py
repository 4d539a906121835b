"""The `sparsecircuits tasks` commands: list the suite, show pairs, evaluate a trained model."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import click

from sparsecircuits.cli_types import DEVICE_OPTION, PAIR_COUNT, POSITIVE_INT, SEED
from sparsecircuits.data import CodeTokenizer
from sparsecircuits.errors import UserError
from sparsecircuits.files import json_text
from sparsecircuits.loading import load_run, resolve_checkpoint
from sparsecircuits.loading.memory import forward_bytes, require_memory
from sparsecircuits.tasks.metrics import evaluate_pairs
from sparsecircuits.tasks.pairs import (
    answer_token,
    describe_skips,
    read_pairs_jsonl,
)
from sparsecircuits.tasks.suite import CONTROL_TASKS, SPLITS, TASKS, get_task, task_pairs

LOSS_MEANING = (
    "loss: -log p(correct answer token) in nats, softmax over the two answer tokens only, at each "
    "prompt's last token, mean over the A and B prompts of every pair; accuracy: share of prompts "
    "whose correct token outscores the wrong one"
)


@click.group()
def tasks() -> None:
    """The binary next-token tasks: list them, show their pairs, evaluate a model."""


@tasks.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_tasks(as_json: bool) -> None:
    """Name and description of every task, then the control tasks (no meaning in Python)."""
    rows = [
        {"name": task.name, "description": task.description, "control": control}
        for control, registry in ((False, TASKS), (True, CONTROL_TASKS))
        for task in registry.values()
    ]
    if as_json:
        click.echo(json_text(rows))
        return
    width = max(len(row["name"]) for row in rows)
    for row in rows:
        click.echo(f"{row['name']:<{width}}  {row['description']}")


@tasks.command()
@click.argument("name")
@click.option("--n", default=3, show_default=True, type=PAIR_COUNT, help="Pairs.")
@click.option("--split", default="test", show_default=True, type=click.Choice(SPLITS))
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--run", type=click.Path(path_type=Path), help="Use this run's tokenizer.")
@click.option(
    "--tokenizer", "tokenizer_file", type=click.Path(path_type=Path), help="Tokenizer JSON file."
)
@click.option(
    "--jsonl",
    is_flag=True,
    help="Print the pairs as JSONL, the format of --pairs (prune, tasks eval, trace).",
)
def show(
    name: str,
    n: int,
    split: str,
    seed: int,
    run: Path | None,
    tokenizer_file: Path | None,
    jsonl: bool,
) -> None:
    """Print a few pairs of task NAME, with their answer tokens when a tokenizer is given."""
    if run is not None and tokenizer_file is not None:
        raise UserError("give --run or --tokenizer, not both")
    pairs = task_pairs(name, split, n, seed)
    if jsonl:
        for pair in pairs:
            click.echo(json_text(asdict(pair), indent=None))
        return
    tokenizer = load_tokenizer(run, tokenizer_file)
    for number, pair in enumerate(pairs, start=1):
        click.echo(f"=== {name} {split} pair {number} of {len(pairs)}")
        tokens = []
        sides = (("A", pair.prompt_a, pair.answer_a), ("B", pair.prompt_b, pair.answer_b))
        for side, prompt, answer in sides:
            click.echo(f"--- prompt {side}\n{prompt}")
            line = f"--- answer {side}: {answer!r}"
            if tokenizer is not None:
                token = answer_token(tokenizer.encode(prompt), tokenizer.encode(prompt + answer))
                tokens.append(token)
                line += "  token " + describe_token(tokenizer, token)
            click.echo(line)
        if tokens and tokens[0] is not None and tokens[0] == tokens[1]:
            click.echo("(A and B have the same answer token: this pair would be skipped)")


def load_tokenizer(run: Path | None, tokenizer_file: Path | None) -> CodeTokenizer | None:
    if tokenizer_file is not None:
        return CodeTokenizer.from_file(tokenizer_file)
    if run is not None:
        return CodeTokenizer.from_file(resolve_checkpoint(run) / "tokenizer.json")
    return None


def describe_token(tokenizer: CodeTokenizer, token: int | None) -> str:
    if token is None:
        return "none (the answer does not start at a token boundary: skipped)"
    return f"{token} {tokenizer.id_to_token_text(token)!r}"


@tasks.command("eval")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--task", "task_names", multiple=True, help="A task (repeatable; default all).")
@click.option(
    "--pairs",
    "pair_files",
    multiple=True,
    type=click.Path(path_type=Path),
    help="A JSONL file of custom pairs, all evaluated (repeatable).",
)
@click.option("--n", default=256, show_default=True, type=PAIR_COUNT, help="Pairs/task.")
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=SEED,
    help="Seed of the test split.",
)
@click.option(
    "--batch-size", default=64, show_default=True, type=POSITIVE_INT, help="Pairs/forward."
)
@click.option("--device", **DEVICE_OPTION)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def eval_tasks(
    run: Path,
    task_names: tuple[str, ...],
    pair_files: tuple[Path, ...],
    n: int,
    seed: int,
    batch_size: int,
    device: str,
    as_json: bool,
) -> None:
    """Task loss and accuracy of the model in RUN on the test split of each task."""
    if not task_names and not pair_files:
        task_names = tuple(TASKS)
    # Read every input before the model, so a typo fails fast.
    for name in task_names:
        get_task(name)
    custom = [(file.stem, read_pairs_jsonl(file)) for file in pair_files]
    loaded = load_run(run, device)
    # A batch is never more pairs than a task has, so only that many can need memory at once.
    largest = max([n] * bool(task_names) + [len(pairs) for _, pairs in custom])
    rows_at_once = 2 * min(batch_size, largest)  # A and B prompts
    config = loaded.model.config
    require_memory(
        forward_bytes(config, rows_at_once, config.n_ctx, logit_positions=1),
        f"--batch-size {batch_size}",
        device,
    )
    rows = []
    for name in task_names:
        pairs = task_pairs(name, "test", n, seed)
        rows.append(evaluate_pairs(name, pairs, loaded.model, loaded.tokenizer, batch_size))
    for label, pairs in custom:
        rows.append(evaluate_pairs(label, pairs, loaded.model, loaded.tokenizer, batch_size))
    if all(row["n"] == 0 for row in rows):
        first = rows[0]
        n_pairs = sum(first["skipped"].values())
        n_ctx = loaded.model.config.n_ctx
        raise UserError(f"{first['task']}: {describe_skips(n_pairs, first['skipped'], n_ctx)}")
    if as_json:
        click.echo(json_text(rows))
        return
    data = f"test split (seed {seed}), {n} pairs per task" if task_names else "custom pairs"
    print_table(rows, data, loaded.path)


def print_table(rows: list[dict], data: str, checkpoint: Path) -> None:
    click.echo(f"{checkpoint}, {data}")
    click.echo(LOSS_MEANING)
    width = max(len("task"), *(len(row["task"]) for row in rows))
    click.echo(f"{'task':<{width}}  {'pairs':>5}  {'loss':>7}  {'accuracy':>8}  skipped pairs")
    for row in rows:
        skipped = sum(row["skipped"].values())
        reasons = ", ".join(
            f"{count} {reason}" for reason, count in row["skipped"].items() if count
        )
        loss = "-" if row["loss"] is None else f"{row['loss']:.4f}"
        accuracy = "-" if row["accuracy"] is None else f"{row['accuracy']:.3f}"
        click.echo(
            f"{row['task']:<{width}}  {row['n']:>5}  {loss:>7}  {accuracy:>8}  {skipped}"
            + (f" ({reasons})" if reasons else "")
        )
    scored = [row for row in rows if row["n"]]
    if len(scored) > 1:
        mean_loss = sum(row["loss"] for row in scored) / len(scored)
        mean_accuracy = sum(row["accuracy"] for row in scored) / len(scored)
        click.echo(
            f"{'mean of ' + str(len(scored)):<{width}}  {'':>5}  {mean_loss:>7.4f}  "
            f"{mean_accuracy:>8.3f}"
        )
