"""Shared steps of the toolkit's commands: load a run's task pairs, write patching results
as figures and report their strongest cells (as lines, or as one JSON object)."""

from __future__ import annotations

from pathlib import Path

import click
import torch

from sparsecircuits.interp.figures import Grid, grid_files
from sparsecircuits.interp.outputs import write_outputs
from sparsecircuits.interp.patching import PatchResult
from sparsecircuits.interp.task_pairs import TaskInput, pairs_to_analyse
from sparsecircuits.loading import Run, load_run


def load_pairs(
    run: Path, task: str | None, pairs_file: Path | None, n: int, seed: int, device: str
) -> tuple[Run, TaskInput]:
    """The run, and the pairs of `--task` or `--pairs` with their batch on `device`."""
    label, text_pairs = pairs_to_analyse(task, pairs_file, n, seed)  # bad input: before loading
    loaded = load_run(run, device=device)
    pairs = TaskInput.encoded(label, text_pairs, loaded)
    pairs.batch = pairs.batch.to(device)
    return loaded, pairs


def patch_grid(result: PatchResult, label: str) -> Grid:
    title = (
        f"{label}: causal tracing, restoring {result.site}"
        if result.method == "causal tracing"
        else f"{label}: {result.method} patching of {result.site} ({result.metric})"
    )
    return Grid(
        title=title,
        values=result.values,
        rows=[f"layer {layer}" for layer in result.layers],
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


def result_name(result: PatchResult, label: str) -> str:
    if result.method == "causal tracing":
        return f"{label}-trace-{result.site}"
    return f"{label}-{result.site}-{result.method}"


def strongest_cells(result: PatchResult, top: int) -> list[dict]:
    """The `top` cells restoring the largest share of the gap (by size), strongest first."""
    flat = torch.nan_to_num(result.values, nan=0.0).flatten()
    cells = []
    for index in flat.abs().argsort(descending=True)[:top].tolist():
        row, column = divmod(index, result.values.shape[1])
        cells.append(
            {
                "layer": result.layers[row],
                "column": result.columns[column],
                "share_restored": float(flat[index]),
            }
        )
    return cells


def write_patch_results(
    results: list[PatchResult], label: str, out: Path, top: int = 5, echo: bool = True
) -> list[dict]:
    """OUT/NAME.{png,html,json} of every result, written together; each one's baselines,
    `top` strongest cells and files, as dicts, and printed unless `echo` is off."""
    files = {}
    for result in results:
        files.update(grid_files(patch_grid(result, label), result_name(result, label)))
    paths = write_outputs(out, files)
    reports = []
    for result in results:
        name = result_name(result, label)
        reports.append(
            {
                "name": name,
                "method": result.method,
                "site": result.site,
                "metric": result.metric,
                "clean": result.baselines.clean,
                "corrupted": result.baselines.corrupted,
                "pairs": result.n_pairs,
                "strongest": strongest_cells(result, top),
                "files": [str(path) for path in paths if path.stem == name],
            }
        )
    if echo:
        for report in reports:
            click.echo(
                f"{report['name']}: {report['metric']} clean {report['clean']:.4f}, "
                f"corrupted {report['corrupted']:.4f} (mean over {report['pairs']} pairs)"
            )
            for cell in report["strongest"]:
                click.echo(
                    f"  layer {cell['layer']} {cell['column']!r}: {cell['share_restored']:+.3f}"
                )
        click.echo("wrote " + ", ".join(str(path) for path in paths))
    return reports
