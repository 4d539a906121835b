"""`sparsecircuits explain`, `explanations top|search|directions` and `puzzles run`."""

from __future__ import annotations

from pathlib import Path

import click

from sparsecircuits.cli_types import (
    DEVICE_OPTION,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    SEED,
    OutputFile,
    splice_options,
)
from sparsecircuits.errors import UserError
from sparsecircuits.explain.store import SCORE_COLUMNS
from sparsecircuits.files import json_text

DEFAULT_DB = Path("runs/explanations.sqlite")
# Rows a query prints at most: more than any database holds, well inside SQLite's integers.
ROW_LIMIT = click.IntRange(min=1, max=1_000_000)


def llm_options(command):  # noqa: ANN001, ANN201 (a click decorator)
    """The `openai` backend's options, shared by `explain` and `puzzles run`."""
    options = [
        click.option("--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1."),
        click.option("--model", "model_name", help="Model name on that server."),
        click.option(
            "--simulator",
            "simulator_mode",
            type=click.Choice(["auto", "logprobs", "json"]),
            default="auto",
            show_default=True,
            help="All-at-once with prompt log-probabilities, or JSON answers; auto tries the "
            "first and falls back.",
        ),
        click.option("--concurrency", type=POSITIVE_INT, default=4, show_default=True),
        click.option("--max-retries", type=click.IntRange(min=0), default=5, show_default=True),
        click.option("--timeout", type=POSITIVE_FLOAT, default=60.0, show_default=True),
    ]
    for option in reversed(options):
        command = option(command)
    return command


BACKENDS = ["offline", "openai", "token-table", "weights", "next-token"]
BACKEND_HELP = (
    "Who explains and simulates: offline needs no server; openai: any OpenAI-compatible "
    "server (--base-url, --model, key from OPENAI_API_KEY); token-table, weights and "
    "next-token are the baselines that need no language model."
)


def make_backend(backend: str, cache, llm: dict, run=None):  # noqa: ANN001, ANN201
    """(explainer, simulator, client or None) for --backend and the LLM options."""
    if backend in ("offline", "next-token"):
        from sparsecircuits.explain.baselines import NextTokenBaseline
        from sparsecircuits.explain.offline import OfflineExplainer, OfflineSimulator

        explainer = NextTokenBaseline() if backend == "next-token" else OfflineExplainer()
        return explainer, OfflineSimulator(), None
    if backend in ("token-table", "weights"):
        from sparsecircuits.explain.baselines import TokenTableBaseline, WeightBaseline

        if backend == "weights" and run is None:
            raise UserError("the weights baseline explains units of a model, not puzzles")
        baseline = TokenTableBaseline() if backend == "token-table" else WeightBaseline(run)
        return baseline, baseline, None
    from sparsecircuits.explain.llm import LLMClient, LLMExplainer, LLMSimulator

    if not llm["base_url"] or not llm["model_name"]:
        raise UserError("--backend openai needs --base-url and --model")
    client = LLMClient(
        llm["base_url"],
        llm["model_name"],
        cache,
        max_retries=llm["max_retries"],
        timeout=llm["timeout"],
        concurrency=llm["concurrency"],
    )
    return LLMExplainer(client), LLMSimulator(client, llm["simulator_mode"]), client


def log_to_stderr(line: str) -> None:
    click.echo(line, err=True)


@click.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--layer", type=click.IntRange(min=0), help="Explain units of this layer.")
@click.option(
    "--kind",
    default="mlp",
    show_default=True,
    help="Unit kind with --layer: mlp, resid, attn_in, q, k, v, attn_out, mlp_in, mlp_out.",
)
@click.option(
    "--units",
    "unit_list",
    help="Channels with --layer, latents with --sae, e.g. 0,1,2 or 0-31 (default all).",
)
@splice_options("Explain this SAE's latents (spliced into RUN) instead of the model's own units.")
@click.option(
    "--circuit",
    "circuit_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Explain the nodes of this circuit file instead.",
)
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="offline",
    show_default=True,
    help=BACKEND_HELP,
)
@click.option("--db", type=OutputFile(), default=DEFAULT_DB, show_default=True)
@click.option(
    "--tokens",
    type=POSITIVE_INT,
    default=500_000,
    show_default=True,
    help="Corpus tokens streamed for activation records.",
)
@click.option("--no-ablation", is_flag=True, help="Skip the ablation score (needs the model).")
@click.option(
    "--revise",
    is_flag=True,
    help="Then test each explanation on unseen text it predicts fires and revise it; "
    "stored as explainer NAME+revised.",
)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", **DEVICE_OPTION)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the stored rows as JSON lines.")
@llm_options
def explain(
    run: Path,
    layer: int | None,
    kind: str,
    unit_list: str | None,
    sae_folder: Path | None,
    force: bool,
    circuit_file: Path | None,
    backend: str,
    db: Path,
    tokens: int,
    no_ablation: bool,
    revise: bool,
    seed: int,
    device: str,
    quiet: bool,
    as_json: bool,
    **llm: object,
) -> None:
    """Explain units of RUN in words, simulate them from the words alone, score the match.

    Units: --layer L (with --kind and --units), --circuit FILE, or --sae DIR (the SAE's
    latents, with --units). Results go to the SQLite database --db, one row per unit, as each
    is scored; running the same command again after an interruption continues where it
    stopped. Latents are stored under the spliced model's hash, apart from the model's units.
    """
    from sparsecircuits.explain.pipeline import ScoreSettings, explain_units
    from sparsecircuits.explain.records import RecordSettings
    from sparsecircuits.explain.store import ExplanationStore
    from sparsecircuits.explain.units import kind_width, latent_units, layer_units, parse_indices
    from sparsecircuits.loading import load_run

    if [layer is None, circuit_file is None, sae_folder is None].count(False) != 1:
        raise UserError("give one of --layer L, --circuit FILE or --sae DIR")
    if revise and backend not in ("offline", "openai"):
        raise UserError("--revise works with the offline and openai backends, not baselines")
    if circuit_file is not None and unit_list is not None:
        raise UserError("--units goes with --layer or --sae, not with --circuit")
    if backend == "weights" and sae_folder is not None:
        raise UserError("the weights baseline reads MLP neurons' weights, not SAE latents")
    loaded = load_run(run, device)
    if sae_folder is not None:
        from sparsecircuits.sae.splice import latents_hook, run_with_sae, written_hook

        loaded, splice = run_with_sae(loaded, sae_folder, force)
        width = splice.sae.config.d_sae
        indices = parse_indices(unit_list, width) if unit_list else None
        units = latent_units(loaded.model_config, written_hook(splice.sae), width, indices)
        log_to_stderr(f"explaining {len(units)} latents at {latents_hook(splice.sae)}")
    elif circuit_file is not None:
        from sparsecircuits.explain.circuit_nodes import circuit_units

        units = circuit_units(loaded, circuit_file)
    else:
        config = loaded.model_config
        units = layer_units(config, layer, kind, None)  # checks the layer and the kind first
        if unit_list:
            indices = parse_indices(unit_list, kind_width(config, kind))
            units = layer_units(config, layer, kind, indices)
    store = ExplanationStore(db)
    explainer, simulator, client = make_backend(backend, store, llm, loaded)
    record_settings = RecordSettings(n_tokens=tokens, seed=seed)
    score_settings = ScoreSettings(ablation=not no_ablation)
    model_label = str(run) if sae_folder is None else f"{run} + {sae_folder}"
    rows = explain_units(
        loaded,
        model_label,
        units,
        explainer,
        simulator,
        store,
        record_settings,
        score_settings,
        concurrency=client.concurrency if client is not None else 1,
        usage=client.usage.to_dict if client is not None else None,
        progress=not quiet,
        log=log_to_stderr,
    )
    if client is not None:
        spent = client.usage.to_dict()
        log_to_stderr(f"{backend} backend: {json_text(spent, indent=None)}")
    if revise:
        from sparsecircuits.explain.revision import revise_units

        rows += revise_units(
            loaded, model_label, units, explainer, simulator, store, record_settings,
            score_settings, log=log_to_stderr,
        )  # fmt: skip
    if circuit_file is not None:
        from sparsecircuits.explain.circuit_nodes import annotate_circuit

        annotate_circuit(circuit_file, store, loaded, explainer.name, log_to_stderr)
    if as_json:
        for row in rows:
            click.echo(json_text(row, indent=None))
        return
    print_rows(rows)
    click.echo(f"stored in {db}")


def print_rows(rows: list[dict], empty: str = "nothing new to explain") -> None:
    if not rows:
        click.echo(empty)
        return
    click.echo(f"{'unit':<16} {'top+random':>10} {'random':>7}  explanation")
    for row in sorted(rows, key=lambda r: -(r["score_top_and_random"] or -2)):
        click.echo(
            f"{row['unit']:<16} {fmt(row['score_top_and_random']):>10} "
            f"{fmt(row['score_random_only']):>7}  {row['explanation']}"
        )


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@click.group()
def explanations() -> None:
    """Query a database of explanations (`sparsecircuits explain --db`)."""


DB_ARGUMENT = click.option(
    "--db",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=DEFAULT_DB,
    show_default=True,
)


@explanations.command()
@DB_ARGUMENT
@click.option(
    "--score",
    default="score_top_and_random",
    show_default=True,
    type=click.Choice(SCORE_COLUMNS),
)
@click.option("--layer", type=click.IntRange(min=0))
@click.option("--kind")
@click.option("--limit", type=ROW_LIMIT, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def top(
    db: Path, score: str, layer: int | None, kind: str | None, limit: int, as_json: bool
) -> None:
    """The best-scored explanations."""
    from sparsecircuits.explain.store import ExplanationStore

    with ExplanationStore(db) as store:
        rows = store.top(score, limit, layer=layer, kind=kind)
    emit([dict(row) for row in rows], as_json)


@explanations.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--layer", type=click.IntRange(min=0), required=True)
@click.option("--kind", default="mlp", show_default=True, help="Hook kind, as explain --kind.")
@click.option("--directions", "count", type=POSITIVE_INT, default=4, show_default=True)
@click.option("--rounds", type=POSITIVE_INT, default=5, show_default=True)
@click.option("--excerpts", type=POSITIVE_INT, default=512, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def directions(
    run: Path,
    layer: int,
    kind: str,
    count: int,
    rounds: int,
    excerpts: int,
    seed: int,
    as_json: bool,
) -> None:
    """Search explainable directions in one layer (offline): a virtual unit over its whitened
    channels, explained and moved towards its explanation in turns; random directions beside."""
    from dataclasses import asdict

    from sparsecircuits.explain.directions import find_directions
    from sparsecircuits.explain.offline import OfflineExplainer, OfflineSimulator
    from sparsecircuits.explain.units import layer_units
    from sparsecircuits.loading import load_run

    loaded = load_run(run)
    layer_units(loaded.model_config, layer, kind, [0])  # the layer and kind exist
    result = find_directions(
        loaded, layer, kind, OfflineExplainer(), OfflineSimulator(), count, rounds,
        excerpts=excerpts, seed=seed, log=log_to_stderr,
    )  # fmt: skip
    found = [asdict(d) for d in result["directions"]]
    chance = [asdict(d) for d in result["random"]]
    if as_json:
        click.echo(json_text({"directions": found, "random": chance}, indent=None))
        return
    for label, group in (("searched", found), ("random", chance)):
        scores = [d["score"] for d in group if d["score"] is not None]
        mean = sum(scores) / len(scores) if scores else None
        click.echo(
            f"{label} directions: mean top-and-random score {fmt(mean)} over {len(scores)} "
            f"directions; {len(group) - len(scores)} unscored"
        )
        for d in group:
            click.echo(f"  {fmt(d['score'])}  {d['explanation']}")


@explanations.command()
@DB_ARGUMENT
@click.argument("text")
@click.option("--limit", type=ROW_LIMIT, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def search(db: Path, text: str, limit: int, as_json: bool) -> None:
    """Explanations containing TEXT (or of the unit named TEXT, e.g. 1.mlp.17)."""
    from sparsecircuits.explain.store import ExplanationStore

    with ExplanationStore(db) as store:
        rows = store.search(text, limit)
    emit([dict(row) for row in rows], as_json)


def emit(rows: list[dict], as_json: bool) -> None:
    if as_json:
        for row in rows:
            click.echo(json_text(row, indent=None))
        return
    print_rows(rows, empty="no explanation matches")


@click.group()
def puzzles() -> None:
    """Synthetic units with a known explanation: does the scorer rank the truth first?"""


@puzzles.command("run")
@click.argument("puzzle_file", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--set",
    "puzzle_set",
    type=click.Choice(["shipped", "dev", "heldout"]),
    help="A set that ships with the package instead of PUZZLE_FILE: shipped (the default; 16, "
    "written for the offline grammar), dev (19 prose puzzles the offline simulator was "
    "developed on) or heldout (19 more, for reporting only).",
)
@click.option(
    "--backend",
    type=click.Choice(["offline", "openai"]),
    default="offline",
    show_default=True,
    help="Who explains and simulates: offline needs no server; openai: any OpenAI-compatible "
    "server (--base-url, --model).",
)
@click.option("--json", "as_json", is_flag=True, help="The whole result as one JSON object.")
@llm_options
def run_puzzles(
    puzzle_file: Path | None, puzzle_set: str | None, backend: str, as_json: bool, **llm: object
) -> None:
    """Score every puzzle's true and false explanations, and the explainer's own.

    PUZZLE_FILE is a JSON list of {"name", "explanation", "false_explanations": [...],
    "excerpts": [{"tokens": [...], "activations": [...]}]}; default: --set shipped.
    """
    from sparsecircuits.explain.puzzles import PUZZLE_SETS, read_puzzles, solve_puzzles

    if puzzle_file is not None and puzzle_set is not None:
        raise UserError("give a PUZZLE_FILE or --set, not both")
    loaded = read_puzzles(puzzle_file or PUZZLE_SETS[puzzle_set or "shipped"])
    explainer, simulator, client = make_backend(backend, None, llm)
    result = solve_puzzles(loaded, explainer, simulator)
    if client is not None:
        result["usage"] = client.usage.to_dict()
    if as_json:
        click.echo(json_text(result))
        return
    for entry in result["per_puzzle"]:
        click.echo(
            f"{entry['name']:<18} truth ranked {entry['truth_rank']} "
            f"(r={fmt(entry['scores'][entry['truth']])}); explainer: "
            f"{entry['explainer_explanation']} (r={fmt(entry['explainer_score'])})"
        )
    baseline = result["baseline"]
    click.echo(
        f"{simulator.name} simulator: truth ranked first on {result['truth_ranked_first']} of "
        f"{result['puzzles']} puzzles, in the top two on {result['top_two']}; named-tokens "
        f"baseline: first on {baseline['truth_ranked_first']}, top two on {baseline['top_two']}"
    )
