"""Every toolkit result as three files: a PNG to look at, an HTML page to hover over (values
and token strings, all escaped) and JSON numbers to compute with.

A result is a titled grid of numbers (a `Grid`: layer x position, layer x head, probe
accuracies per layer...) plus any summary numbers. `grid_files` renders `NAME.png`,
`NAME.html` and `NAME.json` in memory; `write_grid` writes them through `write_outputs`.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from sparsecircuits.files import json_text  # noqa: E402
from sparsecircuits.interp.outputs import write_outputs  # noqa: E402
from sparsecircuits.render import render, template_environment  # noqa: E402

TEMPLATES = template_environment("sparsecircuits.interp")
ANNOTATE_UP_TO = 120  # cells; larger grids are read by colour (and hover, in the HTML)


@dataclass
class Grid:
    title: str
    values: torch.Tensor  # [rows, columns]
    rows: list[str]
    columns: list[str]
    row_axis: str = ""
    column_axis: str = ""
    value_label: str = ""
    diverging: bool = True  # signed values around 0 (blue/red); else sequential from 0
    summary: dict = field(default_factory=dict)  # extra numbers for the JSON and the page

    def __post_init__(self) -> None:
        self.values = self.values.detach().float().cpu()
        if tuple(self.values.shape) != (len(self.rows), len(self.columns)):
            raise ValueError(
                f"grid {self.title!r}: values {tuple(self.values.shape)} do not match "
                f"{len(self.rows)} row and {len(self.columns)} column labels"
            )

    @property
    def limit(self) -> float:
        finite = self.values[self.values.isfinite()]
        largest = float(finite.abs().max()) if finite.numel() else 0.0
        return largest if largest > 0 else 1.0

    def to_dict(self) -> dict:
        return {
            "title": self.title,
            "row_axis": self.row_axis,
            "column_axis": self.column_axis,
            "value_label": self.value_label,
            "rows": self.rows,
            "columns": self.columns,
            "values": [[finite_or_none(v) for v in row] for row in self.values.tolist()],
            **self.summary,
        }


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def write_grid(grid: Grid, stem: Path) -> list[Path]:
    """Write STEM.png, STEM.html and STEM.json; returns the three paths."""
    return write_outputs(stem.parent, grid_files(grid, stem.name))


def grid_files(grid: Grid, name: str) -> dict[str, bytes]:
    """NAME.png, NAME.html and NAME.json of `grid`, rendered in memory."""
    return {
        f"{name}.png": png(grid),
        f"{name}.html": render(TEMPLATES, "grid.html", grid=grid, cells=cells(grid)).encode(),
        f"{name}.json": json_text(grid.to_dict()).encode(),
    }


MAX_TICKS = 64


def png(grid: Grid) -> bytes:
    n_rows, n_columns = grid.values.shape
    width = min(18.0, max(5.0, 2.5 + 0.45 * n_columns))
    figure, axes = plt.subplots(figsize=(width, max(3.0, 1.6 + 0.35 * n_rows)))
    limit = grid.limit
    colours = ("RdBu_r", -limit, limit) if grid.diverging else ("viridis", 0.0, limit)
    image = axes.imshow(
        grid.values.numpy(), cmap=colours[0], vmin=colours[1], vmax=colours[2], aspect="auto"
    )
    if n_rows * n_columns <= ANNOTATE_UP_TO:  # small grids: the numbers themselves too
        for (row, column), value in zip(
            ((r, c) for r in range(n_rows) for c in range(n_columns)),
            grid.values.flatten().tolist(),
            strict=True,
        ):
            if math.isfinite(value):
                strong = abs(value) > 0.6 * limit
                shade = "white" if strong != (not grid.diverging) else "black"
                axes.text(
                    column, row, f"{value:.2f}", ha="center", va="center", fontsize=8, color=shade
                )
    # Past MAX_TICKS columns (MLP neurons, SAE latents) label every few only: readable ticks.
    ticks = range(0, n_columns, math.ceil(n_columns / MAX_TICKS))
    axes.set_xticks(ticks, [short(grid.columns[i]) for i in ticks], rotation=90)
    axes.set_yticks(range(n_rows), grid.rows)
    axes.set_xlabel(grid.column_axis)
    axes.set_ylabel(grid.row_axis)
    axes.set_title(grid.title)
    figure.colorbar(image, ax=axes, label=grid.value_label)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def short(label: str, limit: int = 24) -> str:
    """A token for an axis: whitespace made visible, long ones cut."""
    label = label.replace("\n", "\\n").replace("\t", "\\t")
    return label if len(label) <= limit else label[: limit - 1] + "…"


def cells(grid: Grid) -> list[list[dict]]:
    """Each value with its background colour, for the HTML table."""
    limit = grid.limit
    table = []
    for row in grid.values.tolist():
        table.append(
            [{"value": value, "colour": colour(value, limit, grid.diverging)} for value in row]
        )
    return table


def colour(value: float, limit: float, diverging: bool) -> str:
    if not math.isfinite(value):
        return "#dddddd"
    strength = max(0.0, min(1.0, abs(value) / limit))
    fade = round(255 * (1 - strength))
    if not diverging:
        return f"rgb({fade},{fade + round(strength * 80)},255)"
    return f"rgb(255,{fade},{fade})" if value > 0 else f"rgb({fade},{fade},255)"
