"""`sparsecircuits patch` and `trace`: activation / attribution patching and causal tracing
of a model on a task's clean (A) and corrupted (B) prompts, as PNG, HTML and JSON."""

from __future__ import annotations

from pathlib import Path

import click

from sparsecircuits.cli_types import DEVICE_OPTION, PAIR_COUNT, POSITIVE_INT, SEED, OutputFolder


def task_options(command):  # noqa: ANN001, ANN201 (a click decorator)
    options = [
        click.argument("run", type=click.Path(path_type=Path)),
        click.option(
            "--task", required=True, help="A built-in task (`sparsecircuits tasks list`)."
        ),
        click.option("--out", required=True, type=OutputFolder(), help="Folder for the figures."),
        click.option(
            "--n",
            "n_pairs",
            type=PAIR_COUNT,
            default=32,
            show_default=True,
            help="Pairs of the task's test split.",
        ),
        click.option("--seed", type=SEED, default=0, show_default=True),
        click.option(
            "--last", type=POSITIVE_INT, help="Only the last N positions (position scans)."
        ),
        click.option("--device", **DEVICE_OPTION),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.command()
@task_options
@click.option(
    "--site",
    type=click.Choice(["resid", "heads", "neurons"]),
    default="resid",
    show_default=True,
    help="Residual stream by position, head outputs, or MLP neurons.",
)
@click.option(
    "--attribution",
    is_flag=True,
    help="Estimate every patch at once (2 forward + 1 backward passes).",
)
@click.option(
    "--metric", type=click.Choice(["logit_diff", "prob"]), default="logit_diff", show_default=True
)
def patch(
    run: Path,
    task: str,
    out: Path,
    n_pairs: int,
    seed: int,
    last: int | None,
    device: str,
    site: str,
    attribution: bool,
    metric: str,
) -> None:
    """Patch clean activations into the corrupted run, one layer x position/head/neuron at a
    time, and show how much of the answer each restores."""
    from sparsecircuits.interp.patching import patching
    from sparsecircuits.interp.reports import load_pairs, write_patch_results

    model, pairs = load_pairs(run, task, n_pairs, seed, device)
    method = "attribution" if attribution else "activation"
    write_patch_results([patching(model, pairs, site, method, metric, last=last)], task, out)


@click.command()
@task_options
@click.option(
    "--kind",
    type=click.Choice(["resid", "mlp", "attn"]),
    multiple=True,
    help="Hidden states to restore (repeatable; default all three).",
)
@click.option(
    "--samples", type=POSITIVE_INT, default=5, show_default=True, help="Noise draws per pair."
)
def trace(
    run: Path,
    task: str,
    out: Path,
    n_pairs: int,
    seed: int,
    last: int | None,
    device: str,
    kind: tuple[str, ...],
    samples: int,
) -> None:
    """Causal tracing (ROME): noise the tokens that decide the answer, restore one hidden
    state at a time, and map where the answer's probability comes back."""
    from sparsecircuits.interp.patching import causal_trace
    from sparsecircuits.interp.reports import load_pairs, write_patch_results

    model, pairs = load_pairs(run, task, n_pairs, seed, device)
    results = [
        causal_trace(model, pairs, name, samples=samples, seed=seed, last=last)
        for name in dict.fromkeys(kind or ("resid", "mlp", "attn"))  # each kind once
    ]
    write_patch_results(results, task, out)
