"""Every page of the viewer as HTML text, for the live server and the static export alike.

Pages render through autoescaped templates (sparsecircuits.render): every string from a run,
a circuit file, the corpus, the database or a prompt is escaped; data a page's script needs is
embedded as JSON that cannot close its <script> element (see `script_json`).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from markupsafe import Markup

from sparsecircuits.circuits.draw import circuit_svg
from sparsecircuits.circuits.spread import geometric_mean
from sparsecircuits.errors import UserError
from sparsecircuits.explain.units import Unit, check_units, latent_base, latent_layer_kind
from sparsecircuits.files import write_text_atomic
from sparsecircuits.render import render, template_environment
from sparsecircuits.report.run_report import data_uri, density_per_layer_png, png_bytes
from sparsecircuits.viewer.circuit_data import circuit_details, curve_png
from sparsecircuits.viewer.links import Links
from sparsecircuits.viewer.site import NotFound, Site, ViewedRun, excerpts_of, latent_stats

TEMPLATES = template_environment("sparsecircuits.viewer")
SCORE_COLUMNS = ("score_top_and_random", "score_random_only", "ablation_score", "detection")


def script_json(data: object) -> Markup:
    """`data` as JSON safe inside <script>: no "<", ">" or "&" survives as itself, so no text
    in it can close the element or open a comment (JSON.parse reads the escapes back)."""
    text = json.dumps(data, ensure_ascii=True)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)  # safe: only JSON escapes, see above


def page(links: Links, template: str, title: str, nav: list[dict], **context: object) -> str:
    return str(render(TEMPLATES, template, links=links, title=title, nav=nav, **context))


def model_nav(links: Links, site: Site, run_id: int) -> list[dict]:
    name = site.run(run_id).name
    items = [
        {"href": links.model(run_id), "text": name},
        {"href": links.atlas(run_id), "text": "circuits"},
        {"href": links.units(run_id), "text": "latents" if site.run(run_id).sae else "units"},
    ]
    if links.prompt(run_id):
        items.append({"href": links.prompt(run_id), "text": "prompt"})
    return items


def index_page(site: Site, links: Links) -> str:
    rows = []
    for viewed in site.runs:
        summary, config = viewed.summary, viewed.run.model_config
        rows.append(
            {
                "id": viewed.id,
                "name": viewed.name,
                "n_layer": config.n_layer,
                "d_model": config.d_model,
                "density": summary["density"],
                "val_loss": summary["val_loss"],
                "circuits": len(site.circuits_of(viewed.id)),
                "units": len(site.explanations(viewed.id)),
            }
        )
    return page(links, "index.html", "Models", [], rows=rows, frontier=frontier_png(site))


def frontier_png(site: Site) -> str | None:
    """Validation loss against circuit size (geometric mean of the edges of each model's
    circuits), when at least two given models have circuits."""
    points = []
    for viewed in site.runs:
        edges = [c.metrics.get("edges") for c in site.circuits_of(viewed.id)]
        edges = [e for e in edges if isinstance(e, int) and e > 0]
        if edges and viewed.summary.get("val_loss") is not None:
            points.append(
                (viewed.name, geometric_mean(edges), viewed.summary["val_loss"], len(edges))
            )
    if len(points) < 2:
        return None
    figure, axes = plt.subplots(figsize=(6, 3.6))
    for name, edges, loss, count in points:
        axes.scatter(edges, loss)
        axes.annotate(f"{name} ({count} circuits)", (edges, loss), fontsize=8)
    axes.set_xscale("log")
    axes.set_xlabel("circuit edges (geometric mean over the model's circuits)")
    axes.set_ylabel("validation loss (nats/token)")
    return data_uri(png_bytes(figure, dpi=100))


def model_page(site: Site, links: Links, run_id: int) -> str:
    viewed = site.run(run_id)
    loss_file = viewed.path / "loss.png"
    if not loss_file.is_file():
        loss_file = viewed.run.path.parent.parent / "loss.png"  # a run folder's checkpoint
    config = viewed.run.model_config.to_dict()
    return page(
        links,
        "model.html",
        viewed.name,
        model_nav(links, site, run_id),
        run_id=run_id,
        summary=viewed.summary,
        loss_png=data_uri(loss_file.read_bytes()) if loss_file.is_file() else None,
        density_png=data_uri(density_per_layer_png(viewed.summary)),
        config=[(key, json.dumps(value)) for key, value in config.items()],
        tasks=sorted(viewed.tasks.items()),
        circuits=site.circuits_of(run_id),
        unit_count=len(site.explanations(run_id)),
        prompt_link=links.prompt(run_id),
        sae=sae_summary(viewed),
    )


def sae_summary(viewed: ViewedRun) -> dict | None:
    """The spliced SAE's folder and settings, for the model page of a spliced run."""
    if viewed.sae is None:
        return None
    return {
        "folder": str(viewed.sae_folder),
        "settings": [
            (key, json.dumps(value)) for key, value in viewed.sae.config.to_dict().items()
        ],
    }


def atlas_page(site: Site, links: Links, run_id: int) -> str:
    viewed = site.run(run_id)
    circuits = site.circuits_of(run_id)
    drawings = {circuit.id: circuit_svg(circuit.record) for circuit in circuits}
    title = f"Circuits of {viewed.name}"
    return page(
        links,
        "atlas.html",
        title,
        model_nav(links, site, run_id),
        circuits=circuits,
        drawings=drawings,
    )


def circuit_page(site: Site, links: Links, circuit_id: int, n_tokens: int) -> str:
    circuit = site.circuit(circuit_id)
    details = circuit_details(site, circuit, n_tokens)
    nav = [] if circuit.run_id is None else model_nav(links, site, circuit.run_id)
    curve = details["curve"]
    return page(
        links,
        "circuit.html",
        f"Circuit: {circuit.task}",
        nav,
        circuit=circuit,
        svg=circuit_svg(circuit.record),
        details=script_json(details),
        curve_png=data_uri(curve_png(curve, circuit.record.get("target_loss"))) if curve else None,
        run_id=circuit.run_id,
        unit_links={
            node_id: links.unit(circuit.run_id, node["unit"])
            for node_id, node in details["nodes"].items()
            if node["unit"] is not None
        }
        if circuit.run_id is not None
        else {},
    )


def unit_rows(site: Site, links: Links, run_id: int) -> list[dict]:
    rows = []
    for row in site.explanations(run_id):
        rows.append(
            {
                "unit": row["unit"],
                "href": links.unit(run_id, row["unit"]),
                "layer": row["layer"],
                "kind": row["kind"],
                "explanation": row["explanation"],
                "explainer": row["explainer"],
                **{column: row.get(column) for column in SCORE_COLUMNS},
            }
        )
    return rows


def units_page(site: Site, links: Links, run_id: int, n_tokens: int = 30_000) -> str:
    viewed = site.run(run_id)
    if viewed.sae is not None:
        return latents_page(site, links, run_id, n_tokens)
    rows = unit_rows(site, links, run_id)
    return page(
        links,
        "units.html",
        f"Explained units of {viewed.name}",
        model_nav(links, site, run_id),
        rows=script_json(rows),
        heading=f"{len(rows):,} explained units.",
        score_columns=SCORE_COLUMNS,
        density_png=None,
    )


def latent_units(viewed: ViewedRun) -> list[Unit]:
    """Every latent of a spliced run's SAE, as units."""
    from sparsecircuits.sae.splice import written_hook

    layer, kind = latent_layer_kind(written_hook(viewed.sae))
    return [Unit(layer, kind, index) for index in range(viewed.sae.config.d_sae)]


def latents_page(site: Site, links: Links, run_id: int, n_tokens: int) -> str:
    """Every latent of the SAE with its density, largest activation and explanation (if any):
    the SAE's own page."""
    viewed = site.run(run_id)
    stats = latent_stats(viewed, n_tokens)
    explained = {row["unit"]: row for row in unit_rows(site, links, run_id)}
    rows = []
    for unit in latent_units(viewed):
        row = explained.get(unit.name, {"unit": unit.name, "explanation": None})
        density, largest = stats.density[unit.index], stats.max_activation[unit.index]
        rows.append(
            row | {"href": links.unit(run_id, unit.name), "density": density, "max": largest}
        )
    dead = sum(density == 0 for density in stats.density)
    heading = (
        f"{len(rows):,} latents of {viewed.sae_folder} ({viewed.sae.config.arch}, "
        f"{viewed.sae.config.hook}); density is the share of {stats.tokens:,} corpus tokens on "
        f"which a latent fires: {dead:,} never fired. {len(explained):,} explained."
    )
    return page(
        links,
        "units.html",
        f"Latents of {viewed.name}",
        model_nav(links, site, run_id),
        rows=script_json(rows),
        heading=heading,
        score_columns=("density", "max", *SCORE_COLUMNS),
        density_png=data_uri(density_histogram_png(stats.density)),
    )


def density_histogram_png(densities: list[float]) -> bytes:
    """How many latents fire how often, on a log scale (dead latents counted apart)."""
    alive = [d for d in densities if d > 0]
    figure, axes = plt.subplots(figsize=(6, 3))
    if alive:
        axes.hist(torch.tensor(alive).log10().tolist(), bins=40)
    axes.set_xlabel("log10 density (share of tokens on which the latent fires)")
    axes.set_ylabel("latents")
    axes.set_title(f"{len(alive):,} live latents, {len(densities) - len(alive):,} never fired")
    return png_bytes(figure, dpi=100)


def parse_unit(site: Site, run_id: int, name: str) -> Unit:
    viewed = site.run(run_id)
    try:
        unit = Unit.parse(name)
        widths = {}
        if viewed.sae is not None:
            widths = {latent_units(viewed)[0].kind: viewed.sae.config.d_sae}
        check_units(viewed.run.model_config, [unit], widths)
    except UserError as error:
        raise NotFound(str(error)) from None
    return unit


def unit_page(
    site: Site, links: Links, run_id: int, name: str, n_tokens: int, excerpts: dict | None = None
) -> str:
    viewed = site.run(run_id)
    unit = parse_unit(site, run_id, name)
    if excerpts is None:
        excerpts = excerpts_of(viewed, [unit], n_tokens)
    shown = excerpts.get(unit.name)
    explanations = site.explanation_of(run_id, unit)
    return page(
        links,
        "unit.html",
        f"{viewed.name}: unit {unit.name}",
        model_nav(links, site, run_id),
        unit=unit,
        explanations=explanations,
        score_columns=SCORE_COLUMNS,
        excerpts=shown,
        weights=unit_weights(viewed.run, unit),
        decoder=decoder_effects(viewed, unit),
        explain_hint=explain_hint(viewed, unit),
    )


def explain_hint(viewed: ViewedRun, unit: Unit) -> str:
    """The command that explains this unit."""
    if viewed.sae is not None:
        return f"sparsecircuits explain RUN --sae {viewed.sae_folder} --units {unit.index}"
    return (
        f"sparsecircuits explain RUN --layer {unit.layer} --kind {unit.kind} --units {unit.index}"
    )


def decoder_effects(viewed: ViewedRun, unit: Unit, limit: int = 10) -> dict | None:
    """The tokens a latent's decoder direction pushes up and down most through the final norm's
    weights and the unembedding: its direct effect on the logits (later layers left out), for
    SAEs that write the residual stream or an MLP's neurons."""
    base = latent_base(unit.kind)
    if viewed.sae is None or base is None or viewed.run.tokenizer_or_none is None:
        return None
    if base not in ("resid", "attn_out", "mlp_out", "mlp"):
        return None  # a norm's output: no direct path to the logits
    model = viewed.run.model
    with torch.no_grad():
        direction = viewed.sae.W_dec[unit.index].float() * viewed.sae.config.output_scale
        if base == "mlp":
            direction = model.blocks[unit.layer].mlp.proj.weight.float() @ direction
        effects = model.lm_head.weight.float() @ (model.norm_final.weight.float() * direction)
    text = viewed.run.tokenizer.id_to_token_text

    def chosen(indices: torch.Tensor) -> list[tuple[str, float]]:
        return [(text(int(i)), float(effects[i])) for i in indices]

    return {
        "up": chosen(effects.topk(limit).indices),
        "down": chosen((-effects).topk(limit).indices),
    }


def unit_weights(run, unit: Unit, limit: int = 12) -> dict:  # noqa: ANN001
    """A neuron's strongest input and output weights (few in a sparse model), as named
    channels, and the tokens its output pushes up most through the unembedding."""
    if unit.kind != "mlp":
        return {}
    mlp = run.model.blocks[unit.layer].mlp
    weights_in = mlp.fc.weight[unit.index].detach()
    weights_out = mlp.proj.weight[:, unit.index].detach()

    def strongest(values: torch.Tensor, prefix: str) -> list[tuple[str, float]]:
        order = values.abs().argsort(descending=True)[:limit]
        return [(f"{prefix}{int(i)}", float(values[i])) for i in order if values[i] != 0]

    result = {
        "inputs": strongest(weights_in, f"{unit.layer}.mlp_in."),
        "outputs": strongest(weights_out, f"{unit.layer}.mlp_out."),
        "nonzero_in": int((weights_in != 0).sum()),
        "nonzero_out": int((weights_out != 0).sum()),
    }
    if run.tokenizer_or_none is not None:
        logits = run.model.lm_head.weight.detach() @ weights_out
        top = logits.topk(8).indices.tolist()
        result["tokens"] = [run.tokenizer.id_to_token_text(i) for i in top]
    return result


def not_found_page(links: Links, message: str) -> str:
    return page(links, "not_found.html", "Not found", [], message=message)


def write_page(path: Path, text: str) -> None:
    write_text_atomic(path, text)
