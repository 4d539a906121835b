"""`sparsecircuits lens` and `tuned-lens`: read a model's residual stream layer by layer, on a
prompt or on a task's pairs, as PNG, HTML and JSON; and train the tuned lens that makes the
early layers readable, saved beside the model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from sparsecircuits.cli_types import (
    DEVICE_OPTION,
    PAIR_COUNT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    SEED,
    OutputFolder,
)
from sparsecircuits.errors import UserError

if TYPE_CHECKING:  # torch-heavy: imported inside the commands, so --help answers at once
    import torch

    from sparsecircuits.data import CodeTokenizer
    from sparsecircuits.interp.figures import Grid
    from sparsecircuits.interp.lens import LensReadout, TaskLens


@click.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--prompt", help="Text whose every token the lens reads.")
@click.option("--task", help="A built-in task (`sparsecircuits tasks list`): answers per layer.")
@click.option("--out", required=True, type=OutputFolder(), help="Folder for the figures.")
@click.option("--tuned", is_flag=True, help="Read with the run's tuned lens (see tuned-lens).")
@click.option(
    "--n", "n_pairs", type=PAIR_COUNT, default=64, show_default=True, help="Pairs of --task."
)
@click.option("--seed", type=SEED, default=0, show_default=True, help="Which pairs of --task.")
@click.option("--device", **DEVICE_OPTION)
def lens(
    run: Path,
    prompt: str | None,
    task: str | None,
    out: Path,
    tuned: bool,
    n_pairs: int,
    seed: int,
    device: str,
) -> None:
    """Unembed the residual stream after every layer (logit lens, or with --tuned the tuned
    lens): per token of a --prompt, or for a --task's answers."""
    if (prompt is None) == (task is None):
        raise UserError("give either --prompt TEXT or --task NAME")
    if prompt is not None and not prompt:
        raise UserError("the --prompt is empty")
    from sparsecircuits.interp.figures import write_grid
    from sparsecircuits.interp.lens import (
        layer_labels,
        lens_readout,
        load_tuned_lens,
        read_tuned_lens_report,
        task_lens,
    )
    from sparsecircuits.interp.task_pairs import task_batch
    from sparsecircuits.loading import load_run

    loaded = load_run(run, device=device)
    reader = load_tuned_lens(loaded) if tuned else None
    trained = (read_tuned_lens_report(loaded) or {}).get("tokens_trained") if tuned else None
    if isinstance(trained, int):
        click.echo(f"tuned lens of {loaded.path}, trained on {trained:,} tokens")
    layers = layer_labels(loaded.model)
    name = "tuned lens" if tuned else "logit lens"
    stem = out / ("tuned-lens" if tuned else "logit-lens")
    if prompt is not None:
        tokens = prompt_tokens(loaded.tokenizer, prompt, loaded.model_config.n_ctx, device)
        targets = tokens.roll(-1, dims=1)  # the last position's target is masked out below
        readout = lens_readout(loaded.model, tokens, targets, reader, k=1)
        grid = prompt_grid(loaded.tokenizer, prompt, tokens[0].tolist(), readout, name, layers)
        paths = write_grid(grid, stem.with_name(f"{stem.name}-prompt"))
        echo_prompt_table(grid, name)
    else:
        pairs = task_batch(loaded, task, n_pairs, seed)
        result = task_lens(loaded.model, pairs.to(device), reader)
        grid = task_grid(task, result, name, pairs.n_pairs, layers)
        paths = write_grid(grid, stem.with_name(f"{stem.name}-{task}"))
        echo_task_table(grid, task, name)
    click.echo("wrote " + ", ".join(str(path) for path in paths))


def prompt_tokens(tokenizer: CodeTokenizer, prompt: str, n_ctx: int, device: str) -> torch.Tensor:
    """[1, pos] the prompt's token ids; a UserError if the model cannot read it whole."""
    import torch

    ids = tokenizer.encode(prompt)
    if not ids:
        raise UserError("the --prompt has no tokens")
    if len(ids) > n_ctx:
        raise UserError(f"the --prompt is {len(ids)} tokens; this model reads at most {n_ctx}")
    return torch.tensor([ids], device=device)


def prompt_grid(
    tokenizer: CodeTokenizer,
    prompt: str,
    ids: list[int],
    readout: LensReadout,
    name: str,
    layers: list[str],
) -> Grid:
    """Layers x prompt tokens: the probability the lens gives the prompt's next token."""
    from sparsecircuits.interp.figures import Grid

    values = readout.probability[:, 0].clone()
    values[:, -1] = float("nan")  # the last token's next token is not in the prompt
    top = readout.top_tokens[:, 0, :, 0].tolist()  # [layers, pos] the lens's top-1 token
    return Grid(
        title=f"{name}: probability of the next prompt token",
        values=values,
        rows=layers,
        columns=[tokenizer.id_to_token_text(token) for token in ids],
        row_axis="layer (residual stream after it)",
        column_axis="prompt token",
        value_label="probability of the next token",
        diverging=False,
        summary={
            "lens": name,
            "prompt": prompt,
            "top1_tokens": [[tokenizer.id_to_token_text(t) for t in row] for row in top],
            "top1_probability": readout.top_probability[:, 0, :, 0].tolist(),
            "next_token_rank": readout.rank[:, 0, :-1].tolist(),
        },
    )


def task_grid(task: str, result: TaskLens, name: str, n_pairs: int, layers: list[str]) -> Grid:
    """Layers x (logit diff, accuracy) of the task's answers at the last prompt token."""
    import torch

    from sparsecircuits.interp.figures import Grid

    return Grid(
        title=f"{task}: {name} on the answer at the last token",
        values=torch.stack([result.logit_diff, result.accuracy], dim=1),
        rows=layers,
        columns=["logit diff", "accuracy"],
        row_axis="layer (residual stream after it)",
        column_axis="metric",
        value_label="logit(own answer) - logit(other answer); share of prompts right",
        diverging=True,
        summary={"task": task, "lens": name, "pairs": n_pairs, "prompts": result.n_prompts},
    )


def echo_prompt_table(grid: Grid, name: str) -> None:
    last = grid.columns[-1]
    click.echo(f"{name}, top-1 next token at the last prompt token {last!r}:")
    click.echo(f"{'layer':<10} {'top-1 token':<20} {'probability':>11}")
    tokens, probabilities = grid.summary["top1_tokens"], grid.summary["top1_probability"]
    for layer, row in enumerate(grid.rows):
        click.echo(f"{row:<10} {tokens[layer][-1]!r:<20} {probabilities[layer][-1]:>11.4f}")


def echo_task_table(grid: Grid, task: str, name: str) -> None:
    prompts = grid.summary["prompts"]
    click.echo(f"{name} on {task}: answers at the last token of {prompts} prompts")
    click.echo(f"{'layer':<10} {'logit diff':>10} {'accuracy':>9}")
    for row, (logit_diff, accuracy) in zip(grid.rows, grid.values.tolist(), strict=True):
        click.echo(f"{row:<10} {logit_diff:>+10.3f} {accuracy:>9.3f}")


@click.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--tokens", type=POSITIVE_INT, help="Training tokens [default: 8 windows a step].")
@click.option("--steps", type=POSITIVE_INT, default=250, show_default=True, help="Adam steps.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Which windows train it.")
@click.option("--lr", type=POSITIVE_FLOAT, default=1e-2, show_default=True)
@click.option(
    "--held-out-tokens",
    type=POSITIVE_INT,
    help="Tokens the KL is measured on [default: 16 windows].",
)
@click.option("--device", **DEVICE_OPTION)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def tuned_lens(
    run: Path,
    tokens: int | None,
    steps: int,
    seed: int,
    lr: float,
    held_out_tokens: int | None,
    device: str,
    quiet: bool,
) -> None:
    """Train a tuned lens for RUN (one affine map per layer, fitted to the model's final
    distribution) and save it beside the model, for `sparsecircuits lens --tuned`."""
    from sparsecircuits.files import check_output_file
    from sparsecircuits.interp.lens import save_tuned_lens, train_tuned_lens, tuned_lens_paths
    from sparsecircuits.loading import load_run

    loaded = load_run(run, device=device)
    for path in tuned_lens_paths(loaded):
        check_output_file(path)  # an unwritable run folder fails now, not after training
    trained, report = train_tuned_lens(
        loaded, tokens, steps, seed, lr, held_out_tokens, progress=not quiet
    )
    paths = save_tuned_lens(loaded, trained, report)
    click.echo(
        f"trained on {report.tokens_trained:,} tokens in {report.seconds:.1f} s; "
        f"KL(final || lens) in nats/token on {report.held_out_tokens:,} held-out tokens:"
    )
    click.echo(f"{'layer':<10} {'logit lens':>10} {'tuned lens':>10}")
    for layer, plain, tuned in zip(
        report.layers, report.kl_logit_lens, report.kl_tuned_lens, strict=True
    ):
        click.echo(f"{layer:<10} {plain:>10.4f} {tuned:>10.4f}")
    click.echo("wrote " + ", ".join(str(path) for path in paths))
