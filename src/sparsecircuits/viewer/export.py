"""The static export: every page of the live viewer but the prompt page, as files in one
folder that open from disk with no network (the script and style sheet are copied beside
them)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from sparsecircuits.errors import UserError
from sparsecircuits.explain.units import Unit
from sparsecircuits.viewer import pages
from sparsecircuits.viewer.links import Links
from sparsecircuits.viewer.site import Site, excerpts_of

LINKS = Links(static=True)
STATIC = Path(__file__).parent / "static"


MARKER = ".sparsecircuits-viewer"


def export_site(site: Site, out: Path, n_tokens: int = 30_000) -> dict[str, float]:
    """Write every page under `out` (new, empty, or an earlier export, which is updated);
    returns seconds spent per kind of page."""
    if out.exists() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise UserError(f"{out} holds other files; choose a new folder for the viewer's pages")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("pages written by sparsecircuits view --export\n")
    (out / "static").mkdir(exist_ok=True)
    for asset in STATIC.iterdir():
        shutil.copyfile(asset, out / "static" / asset.name)
    timings: dict[str, float] = {}

    def timed(kind: str, path: str, make, *args: object) -> None:  # noqa: ANN001
        started = time.perf_counter()
        pages.write_page(out / path, make(site, LINKS, *args))
        timings[kind] = timings.get(kind, 0.0) + time.perf_counter() - started

    timed("index", LINKS.index(), pages.index_page)
    for viewed in site.runs:
        run_id = viewed.id
        timed("model", LINKS.model(run_id), pages.model_page, run_id)
        timed("circuits", LINKS.atlas(run_id), pages.atlas_page, run_id)
        timed("units", LINKS.units(run_id), pages.units_page, run_id)
        names = {row["unit"] for row in site.explanations(run_id)}
        for circuit in site.circuits_of(run_id):
            names |= {Unit.parse(node["id"]).name for node in circuit.record["nodes"]}
        started = time.perf_counter()
        excerpts = excerpts_of(viewed, sorted(Unit.parse(n) for n in names), n_tokens)
        timings["excerpts"] = timings.get("excerpts", 0.0) + time.perf_counter() - started
        for name in sorted(names):
            unit_args = (run_id, name, n_tokens, excerpts)
            timed("unit", LINKS.unit(run_id, name), pages.unit_page, *unit_args)
    for circuit in site.circuits:
        timed("circuit", LINKS.circuit(circuit.id), pages.circuit_page, circuit.id, n_tokens)
    return timings
