"""Shared steps of the toolkit's commands: load a run's task pairs, write a patching result
as a figure and print its strongest cells."""

from __future__ import annotations

from pathlib import Path

import click
import torch

from sparsecircuits.interp.figures import Grid, write_grid
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


def write_patch_result(result: PatchResult, task: str, stem: Path, top: int = 5) -> None:
    paths = write_grid(patch_grid(result, task), stem)
    base = result.baselines
    click.echo(f"{result.metric}: clean {base.clean:.4f}, corrupted {base.corrupted:.4f}")
    flat = torch.nan_to_num(result.values, nan=0.0).flatten()
    for index in flat.abs().argsort(descending=True)[:top].tolist():
        layer, column = divmod(index, result.values.shape[1])
        click.echo(f"  layer {layer} {result.columns[column]!r}: {flat[index]:+.3f}")
    click.echo("wrote " + ", ".join(str(path) for path in paths))
