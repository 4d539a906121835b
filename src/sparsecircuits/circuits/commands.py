"""Commands: `prune`, `circuit draw`, `circuit eval` and `frontier`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from sparsecircuits.circuits.config import PruneConfig, parse_strict, strict_names
from sparsecircuits.circuits.sweep import DEFAULT_SETTINGS
from sparsecircuits.circuits.task_data import task_splits
from sparsecircuits.cli_types import (
    DEVICE_OPTION,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    SEED,
    TARGET_LOSS,
    OutputFile,
    splice_options,
)
from sparsecircuits.errors import UserError
from sparsecircuits.files import json_text
from sparsecircuits.tasks import get_task

# Shared by `prune` and `frontier`, which prune with the same recipe.
TARGET_LOSS_HELP = (
    "Task loss the circuit must reach, in nats per sequence (each prompt of a pair counted "
    "alone); the paper's release sums the pair's two, so its 0.15 is 0.075 here. Chance is "
    "ln 2 = 0.693."
)
STEPS_OPTION = click.option(
    "--steps",
    default=PruneConfig.steps,
    show_default=True,
    type=POSITIVE_INT,
    help="Mask-training steps per setting.",
)
SWEEP_OPTION = click.option(
    "--sweep",
    default=DEFAULT_SETTINGS,
    show_default=True,
    type=click.IntRange(min=0),
    help="Settings of the node penalty tried per task (1 = no sweep); 0 = the equal-effort "
    "grid of 3 node penalties x 2 learning rates, the same for every model and task.",
)


def log_to_stderr(message: str) -> None:
    click.echo(message, err=True)


@click.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--task", help="A built-in task (see `sparsecircuits tasks list`).")
@click.option(
    "--pairs",
    "pairs_file",
    type=click.Path(path_type=Path),
    help="Your own pairs, JSONL: prompt_a, prompt_b, answer_a, answer_b.",
)
@click.option("--out", type=OutputFile(), help="Write the circuit file here.")
@click.option(
    "--target-loss",
    default=0.15,
    show_default=True,
    type=TARGET_LOSS,
    help=TARGET_LOSS_HELP,
)
@click.option("--ablation", type=click.Choice(["mean", "zero"]), default="mean", show_default=True)
@STEPS_OPTION
@click.option(
    "--k-coef",
    default=PruneConfig.k_coef,
    show_default=True,
    type=POSITIVE_FLOAT,
    help="Node penalty of the first setting; the sweep moves from there.",
)
@SWEEP_OPTION
@click.option(
    "--trim/--no-trim",
    default=True,
    show_default=True,
    help="Then drop the circuit's nodes one by one while the target still holds. With "
    "--method eap, --no-trim reports EAP's raw top-k circuit (no clean-up, trimming or "
    "verification).",
)
@click.option(
    "--controls",
    is_flag=True,
    help="Also prune a random-weight copy, a learnable nonsense task and the other ablation "
    "(4x time).",
)
@click.option(
    "--strict",
    "strict",
    metavar="embedding,topk,norm|all",
    help="Leave the circuit more strictly alone: the token embedding's channels become nodes "
    "(embedding), each AbsTopK chooses after the ablation (topk), every RMSNorm divides by "
    "its mean scale (norm). Off: the paper's ablation. See docs/circuits.md.",
)
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option(
    "--method",
    type=click.Choice(["prune", "eap"]),
    default="prune",
    show_default=True,
    help="eap: edge attribution patching, a fast first-order baseline (larger circuits).",
)
@splice_options(
    "A transcoder (blocks.L.hook_mlp_in -> blocks.L.hook_mlp_out) or an SAE on "
    "blocks.L.mlp.hook_post, spliced in: its latents and one error node replace layer L's "
    "neurons as nodes."
)
@click.option("--device", **DEVICE_OPTION)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def prune(
    run: Path,
    task: str | None,
    pairs_file: Path | None,
    out: Path | None,
    target_loss: float,
    ablation: str,
    steps: int,
    k_coef: float,
    sweep: int,
    trim: bool,
    controls: bool,
    strict: str | None,
    seed: int,
    method: str,
    sae_folder: Path | None,
    force: bool,
    device: str,
    as_json: bool,
) -> None:
    """Find the smallest circuit of RUN that does a task at the target loss.

    Prints its size, its test loss, necessity (only the circuit ablated), random circuits of
    the same size and layer mix, the same circuit under the other ablation, and whether it is
    accepted as the model's circuit ("accepted", "reason": the full model must do the task
    below the target and the circuit must agree with it). Losses are per prompt: the mean over
    the pair's two prompts of -log p(correct answer) (the paper's release sums the pair: 2x).
    """
    from sparsecircuits.circuits.circuit_file import outcome_to_record, write_circuit
    from sparsecircuits.circuits.pipeline import prune_to_target_loss
    from sparsecircuits.loading import load_run

    options = parse_strict(strict) if strict is not None else {}  # a typo before any loading
    if sae_folder is not None and (method == "eap" or controls):
        raise UserError("--sae goes with --method prune and without --controls (for now)")
    loaded = load_run(run, device)
    spliced_sae = None
    if sae_folder is not None:
        from sparsecircuits.circuits.latents import latent_layers
        from sparsecircuits.sae.splice import run_with_sae, sae_sha256

        loaded, splice = run_with_sae(loaded, sae_folder, force)
        (replaced,) = latent_layers(loaded.model)  # one line for an SAE that cannot replace
        spliced_sae = {
            "folder": str(sae_folder),
            "sha256": sae_sha256(splice.sae),
            "layer": replaced.layer,
            "kind": replaced.latents.kind,
            "d_sae": replaced.latents.width,
        }
    splits = task_splits(loaded, task, pairs_file, seed)
    config = PruneConfig(
        target_loss=target_loss,
        ablation=ablation,
        steps=steps,
        k_coef=k_coef,
        seed=seed,
        sweep=sweep,
        **options,
    )
    if method == "eap":
        from sparsecircuits.circuits.attribution import eap_outcome

        if controls:
            raise UserError("--controls goes with --method prune only")
        outcome = eap_outcome(loaded, splits, config, post_process=trim, log=log_to_stderr)
    else:
        outcome = prune_to_target_loss(loaded, splits, config, trim=trim, log=log_to_stderr)
    if controls:
        from sparsecircuits.circuits.controls import pruned_controls

        outcome.metrics["controls"] = pruned_controls(loaded, splits, config, log=log_to_stderr)
    if out is not None:
        record = outcome_to_record(loaded, outcome)
        if spliced_sae is not None:
            record["sae"] = spliced_sae  # the nodes are its latents: readers splice it too
        write_circuit(record, out)
    metrics = outcome.metrics
    summary = {"task": splits.name, **{key: metrics[key] for key in SUMMARY_KEYS if key in metrics}}
    if strict_names(options):
        summary["strict"] = strict_names(options)
    for name, result in metrics.get("controls", {}).items():
        summary[f"control {name}"] = (
            f"{result['edges']} edges, test loss {result['circuit_loss']:.4f} (met the target; "
            f"{'accepted' if result['accepted'] else 'rejected'}: {result['reason']})"
            if result["met"]
            else "no circuit met the target"
        )
    echo_summary(summary, as_json)


def echo_summary(summary: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json_text(summary, indent=None))
        return
    for key, value in summary.items():
        click.echo(f"{key:<26}{value:.4f}" if isinstance(value, float) else f"{key:<26}{value}")


SUMMARY_KEYS = (
    "nodes",
    "edges",
    "circuit_loss",
    "full_model_loss",
    "ablated_circuit_loss",
    "random_circuit_loss",
    "other_ablation",
    "other_ablation_loss",
    "agreement_with_full_model",
    "accepted",
    "reason",
    "seconds",
    "effort",
    "eap",  # EAP's raw top-k circuit, beside the post-processed one above
)


@click.group()
def circuit() -> None:
    """Check and draw saved circuit files."""


@circuit.command("eval")
@click.argument("circuit_file", type=click.Path(path_type=Path))
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--task", help="A built-in task: its test split is used.")
@click.option("--pairs", "pairs_file", type=click.Path(path_type=Path), help="Your own pairs.")
@click.option(
    "--seed", default=1, show_default=True, type=SEED, help="Seed of the task pairs drawn."
)
@click.option("--force", is_flag=True, help="Evaluate even on a model the circuit is not of.")
@click.option("--device", **DEVICE_OPTION)
@click.option("--json", "as_json", is_flag=True)
def circuit_eval(
    circuit_file: Path,
    run: Path,
    task: str | None,
    pairs_file: Path | None,
    seed: int,
    force: bool,
    device: str,
    as_json: bool,
) -> None:
    """Losses of a saved circuit on other pairs (is it faithful beyond its pruning data?)."""
    from dataclasses import replace

    from sparsecircuits.circuits.checks import circuit_checks
    from sparsecircuits.circuits.circuit_file import (
        circuit_on_model,
        model_hash,
        read_circuit,
        strict_options_of,
    )
    from sparsecircuits.circuits.pipeline import measure_circuit
    from sparsecircuits.circuits.space import circuit_space
    from sparsecircuits.loading import load_run, usable_device

    usable_device(device)  # a flag's mistake before any file's
    record = read_circuit(circuit_file)
    loaded = load_run(run, device)
    model_matches = model_hash(loaded) == record["model"]["sha256"]
    if not model_matches:
        message = f"{circuit_file} was pruned from another model than {run}"
        if not force:
            raise UserError(f"{message}; pass --force to evaluate it there anyway")
        click.echo(f"warning: {message}; its numbers say little about this one", err=True)
    # The circuit is measured as it was pruned: the same ablation, equally strict.
    options = strict_options_of(record)
    space = circuit_space(loaded, record["ablation"], **options)
    circuit_record = circuit_on_model(record, loaded, space)
    splits = task_splits(loaded, task, pairs_file, seed)
    # The controls are calibrated on pairs apart from the ones measured, as in `prune`.
    if pairs_file is not None:  # a pairs file: on its largest part
        splits = replace(splits, select=splits.train)
    keep = circuit_record.keep
    config = PruneConfig(target_loss=record["target_loss"], ablation=record["ablation"], **options)
    metrics = measure_circuit(space, keep, circuit_record.calibration, splits, config)
    metrics |= circuit_checks(loaded, space, record["ablation"], keep, splits)
    result = {
        "task": splits.name,
        "circuit_task": record["task"],
        "model_matches": model_matches,
        **metrics,
    }
    if strict_names(options):
        result["strict"] = strict_names(options)
    echo_summary(result, as_json)


@circuit.command("draw")
@click.argument("circuit_file", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=OutputFile(), help=".html or .svg")
@click.option(
    "--run",
    type=click.Path(path_type=Path),
    help="Model for hover activations (default: the path in the circuit file).",
)
def circuit_draw(circuit_file: Path, out: Path, run: Path | None) -> None:
    """Draw a circuit file as an HTML page or an SVG image."""
    from sparsecircuits.circuits.circuit_file import circuit_on_model, read_circuit
    from sparsecircuits.circuits.draw import write_drawing
    from sparsecircuits.loading import load_run
    from sparsecircuits.tasks import TASKS, task_pairs

    if out.suffix not in (".html", ".svg"):
        raise UserError(f"--out must end in .html or .svg, got {out.name}")
    record = read_circuit(circuit_file)
    model_path = run or Path(record["model"]["path"])
    loaded = load_run(model_path) if model_path.exists() else None
    prompts = []
    if record["task"] in TASKS:
        for pair in task_pairs(record["task"], "test", 2):
            prompts += [pair.prompt_a, pair.prompt_b]
    if loaded is None:
        click.echo(f"note: {model_path} not found; drawing without activations", err=True)
    else:
        circuit_on_model(record, loaded)  # a model of another shape: one line, not a crash
    write_drawing(record, out, loaded, prompts)
    click.echo(f"wrote {out}")


def check_plot_format(out: Path) -> None:
    """A file type matplotlib cannot write would otherwise fail after all the pruning."""
    from matplotlib.backend_bases import FigureCanvasBase

    kind = out.suffix.lstrip(".").lower() or "png"  # as `save_figure` reads it
    if kind not in FigureCanvasBase.get_supported_filetypes():
        raise UserError(f"--out {out.name}: matplotlib cannot write .{kind} files; use .png")


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--tasks",
    "task_names",
    help="Comma-separated task names to consider (default: the whole suite); only those every "
    "run does (full model at or below --target-loss on validation pairs) are compared.",
)
@click.option("--out", required=True, type=OutputFile(), help="PNG plot.")
@click.option(
    "--target-loss", default=0.15, show_default=True, type=TARGET_LOSS, help=TARGET_LOSS_HELP
)
@SWEEP_OPTION
@STEPS_OPTION
@click.option(
    "--seeds",
    default=3,
    show_default=True,
    type=click.IntRange(1, 100),
    help="Pruning seeds per run and task: sizes are medians over them.",
)
@click.option(
    "--reuse",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="JSON of an earlier frontier or benchmarks/circuit_size.py run whose prunes (same "
    "weights, pairs and settings) are reused; repeatable.",
)
@click.option("--fresh", is_flag=True, help="Prune again even where a stored result exists.")
@click.option("--json", "as_json", is_flag=True)
def frontier(
    runs: tuple[Path, ...],
    task_names: str | None,
    out: Path,
    target_loss: float,
    sweep: int,
    steps: int,
    seeds: int,
    reuse: tuple[Path, ...],
    fresh: bool,
    as_json: bool,
) -> None:
    """Validation loss against circuit size (median edges over the tasks every run does and
    over pruning seeds), the paper's frontier plot, for each checkpoint.

    Prune results are kept in SQLite (prunes.sqlite in the cache folder) and reused.
    """
    from sparsecircuits.circuits.frontier import measure_frontier, plot_frontier
    from sparsecircuits.circuits.seeds import recorded_prunes

    check_plot_format(out)
    names = None
    if task_names is not None:
        names = [t.strip() for t in task_names.split(",") if t.strip()]
        if not names:
            raise UserError(f"--tasks {task_names!r} names no task")
        for name in names:
            get_task(name)
    config = PruneConfig(target_loss=target_loss, steps=steps, sweep=sweep)
    points = measure_frontier(
        list(runs),
        names,
        config,
        seeds,
        recorded=recorded_prunes(list(reuse)),
        fresh=fresh,
        log=log_to_stderr,
    )
    plot_frontier(points, out)
    if as_json:
        click.echo(json_text(points, indent=1))
    else:
        for point in points:
            median = point["edges_median"]
            shown = f"{median:,.0f}" if median is not None else "target not reached"
            click.echo(
                f"{point['run']}: val loss {point['val_loss']:.4f}, median edges {shown} over "
                f"{len(point['tasks_compared'])} tasks x {seeds} seeds",
                file=sys.stdout,
            )
