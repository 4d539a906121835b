"""Shared steps of the toolkit's commands: load a run's task pairs, write patching results
as figures and print their strongest cells."""

from __future__ import annotations

from pathlib import Path

import click
import torch

from sparsecircuits.interp.figures import Grid, grid_files
from sparsecircuits.interp.outputs import write_outputs
from sparsecircuits.interp.patching import PatchResult
from sparsecircuits.interp.task_pairs import PromptPairs, task_prompt_pairs
from sparsecircuits.loading import load_run
from sparsecircuits.model import GPT


def load_pairs(run: Path, task: str, n: int, seed: int, device: str) -> tuple[GPT, PromptPairs]:
    loaded = load_run(run, device=device)
    return loaded.model, task_prompt_pairs(loaded, task, n, seed).to(device)


def patch_grid(result: PatchResult, task: str) -> Grid:
    title = (
        f"{task}: causal tracing, restoring {result.site}"
        if result.method == "causal tracing"
        else f"{task}: {result.method} patching of {result.site} ({result.metric})"
    )
    return Grid(
        title=title,
        values=result.values,
        rows=[f"layer {layer}" for layer in range(result.values.shape[0])],
        columns=result.columns,
        row_axis="layer",
        column_axis=result.column_axis,
        value_label="share of the gap restored",
        summary={
            "metric": result.metric,
            "method": result.method,
            "clean": result.baselines.clean,
            "corrupted": result.baselines.corrupted,
            "pairs": result.n_pairs,
        },
    )


def result_name(result: PatchResult, task: str) -> str:
    if result.method == "causal tracing":
        return f"{task}-trace-{result.site}"
    return f"{task}-{result.site}-{result.method}"


def write_patch_results(results: list[PatchResult], task: str, out: Path, top: int = 5) -> None:
    """OUT/NAME.{png,html,json} of every result, written together, and each one's `top`
    strongest cells printed."""
    files = {}
    for result in results:
        files.update(grid_files(patch_grid(result, task), result_name(result, task)))
    paths = write_outputs(out, files)
    for result in results:
        base = result.baselines
        click.echo(
            f"{result_name(result, task)}: {result.metric} clean {base.clean:.4f}, "
            f"corrupted {base.corrupted:.4f}"
        )
        flat = torch.nan_to_num(result.values, nan=0.0).flatten()
        for index in flat.abs().argsort(descending=True)[:top].tolist():
            layer, column = divmod(index, result.values.shape[1])
            click.echo(f"  layer {layer} {result.columns[column]!r}: {flat[index]:+.3f}")
    click.echo("wrote " + ", ".join(str(path) for path in paths))
