"""`sparsecircuits view`: the local viewer, live or exported as static pages."""

from __future__ import annotations

from pathlib import Path

import click

from sparsecircuits.cli_types import DEVICE_OPTION, POSITIVE_INT
from sparsecircuits.viewer.export_folder import ExportFolder


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--circuits",
    "circuit_paths",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Circuit files, or folders of them (repeatable).",
)
@click.option("--db", type=click.Path(path_type=Path), help="An explanations database.")
@click.option(
    "--sae",
    "sae_paths",
    multiple=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="An SAE of one of RUNS, shown as that model with the SAE spliced in: its latents "
    "with their density, explanations and excerpts (repeatable).",
)
@click.option(
    "--export",
    type=ExportFolder(),
    help="Write static pages as this folder instead (new, empty or an earlier export).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
@click.option(
    "--tokens",
    type=POSITIVE_INT,
    default=30_000,
    show_default=True,
    help="Corpus tokens read for each model's excerpts.",
)
@click.option("--device", **DEVICE_OPTION)
def view(
    runs: tuple[Path, ...],
    circuit_paths: tuple[Path, ...],
    db: Path | None,
    sae_paths: tuple[Path, ...],
    export: Path | None,
    host: str,
    port: int,
    tokens: int,
    device: str,
) -> None:
    """Browse models, circuits, explained units and prompts in a local web app.

    RUNS are run or model folders. Served on http://127.0.0.1:PORT (only this machine can reach
    it unless --host says otherwise); with --export DIR, the same pages (all but the live
    prompt page) are written as static HTML that opens from disk.
    """
    from sparsecircuits.viewer.site import Site

    site = Site(list(runs), list(circuit_paths), db, device, list(sae_paths))
    if export is not None:
        from sparsecircuits.viewer.export import export_site

        timings = export_site(site, export, tokens)
        total = sum(timings.values())
        click.echo(f"wrote {export / 'index.html'} ({total:.1f} s)")
        return
    from sparsecircuits.viewer.server import serve

    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(
            f"warning: serving on {host}: other machines can read these pages and run the model"
        )
    click.echo(f"viewer on http://{host}:{port}/ (Ctrl-C to stop)")
    serve(site, host, port, tokens)
