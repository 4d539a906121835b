"""The static export: every page of the live viewer but the prompt page, as files in one
folder that open from disk with no network (the script and style sheet are copied beside
them).

The pages are written into a staging folder beside the destination and renamed into place once
all of them are there (`files.atomic_folder`); an earlier export is swapped out only then. So a
failure part way leaves the earlier export as it was, and no half folder, temporary or parent
folder made for it.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from sparsecircuits.cli_types import unusable_folder
from sparsecircuits.errors import UserError
from sparsecircuits.explain.units import Unit
from sparsecircuits.files import atomic_folder, remove_stale_temporaries, temporary_path
from sparsecircuits.interp.outputs import missing_folders, remove_empty
from sparsecircuits.viewer import pages
from sparsecircuits.viewer.export_folder import MARKER, unusable_export
from sparsecircuits.viewer.links import Links
from sparsecircuits.viewer.site import Site, excerpts_of, node_unit

LINKS = Links(static=True)
STATIC = Path(__file__).parent / "static"


def export_site(site: Site, out: Path, n_tokens: int = 30_000) -> dict[str, float]:
    """Write every page as the folder `out` (new, empty, or an earlier export, which is
    replaced); returns seconds spent per kind of page."""
    out = Path(out)
    # Checked again (the flag was checked before the models loaded): it may have changed since.
    problem = unusable_folder(out) or unusable_export(out)
    if problem is not None:
        raise UserError(problem)
    earlier = (out / MARKER).is_file()
    made = missing_folders(out.parent)
    remove_stale_temporaries(out.parent, out.name)  # an earlier killed export's leftovers
    remove_stale_temporaries(out.parent, f".{out.name}")  # and its staging of a swap
    # An earlier export is not empty, so atomic_folder cannot rename onto it: the new pages go
    # to a temporary name first and are swapped in below.
    staged = temporary_path(out) if earlier else out
    try:
        with atomic_folder(staged) as staging:
            timings = write_pages(site, staging, n_tokens)
        if earlier:
            swap_in(staged, out)
    except BaseException:
        remove_empty(made)
        raise
    return timings


def swap_in(new: Path, out: Path) -> None:
    """Put the folder `new` where the earlier export `out` is, then delete the earlier one."""
    retired = temporary_path(out)
    try:
        os.rename(out, retired)
        try:
            os.rename(new, out)
        except OSError:
            os.rename(retired, out)  # the earlier export back where it was
            raise
    except OSError as error:
        shutil.rmtree(new, ignore_errors=True)
        raise UserError(f"cannot write {out}: {error.strerror or error}") from None
    shutil.rmtree(retired, ignore_errors=True)


def write_pages(site: Site, out: Path, n_tokens: int) -> dict[str, float]:
    """Every page, the static assets and the marker, written into the folder `out`."""
    (out / MARKER).write_text("pages written by sparsecircuits view --export\n")
    (out / "static").mkdir()
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
        timed("units", LINKS.units(run_id), pages.units_page, run_id, n_tokens)
        names = {row["unit"] for row in site.explanations(run_id)}
        if viewed.sae is not None:  # the latents page links every latent
            names |= {unit.name for unit in pages.latent_units(viewed)}
        for circuit in site.circuits_of(run_id):
            units = [node_unit(node["id"]) for node in circuit.record["nodes"]]
            names |= {unit.name for unit in units if unit is not None}
        started = time.perf_counter()
        excerpts = excerpts_of(viewed, sorted(Unit.parse(n) for n in names), n_tokens)
        timings["excerpts"] = timings.get("excerpts", 0.0) + time.perf_counter() - started
        for name in sorted(names):
            unit_args = (run_id, name, n_tokens, excerpts)
            timed("unit", LINKS.unit(run_id, name), pages.unit_page, *unit_args)
    for circuit in site.circuits:
        timed("circuit", LINKS.circuit(circuit.id), pages.circuit_page, circuit.id, n_tokens)
    return timings
