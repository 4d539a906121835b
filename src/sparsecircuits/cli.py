"""The `sparsecircuits` command. Bad input ends in one line on stderr and exit code 2."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from sparsecircuits.cli_types import (
    POSITIVE_INT,
    OutputPath,
)
from sparsecircuits.errors import UserError
from sparsecircuits.files import json_text

if TYPE_CHECKING:  # the CLI imports torch-heavy packages only inside commands
    pass

# Commands of the later pipeline stages live beside their code and import torch; they are
# loaded only when run, so `sparsecircuits --help` answers at once. name -> (module, short help)
STAGE_COMMANDS = {
    "train": (
        "sparsecircuits.train.commands",
        "Train a weight-sparse (or, with --density 1, dense) GPT.",
    ),
    "corpus": (
        "sparsecircuits.data.commands",
        "Build pinned corpora and count what a corpus holds for...",
    ),
    "tasks": (
        "sparsecircuits.tasks.commands",
        "The binary next-token tasks: list them, show their pairs,...",
    ),
    "prune": (
        "sparsecircuits.circuits.commands",
        "Find the smallest circuit of RUN that does a task at the...",
    ),
    "circuit": ("sparsecircuits.circuits.commands", "Check and draw saved circuit files."),
    "frontier": (
        "sparsecircuits.circuits.commands",
        "Validation loss against circuit size (median edges over...",
    ),
    "explain": (
        "sparsecircuits.explain.commands",
        "Explain units of RUN in words, simulate them from the...",
    ),
    "explanations": (
        "sparsecircuits.explain.commands",
        "Query a database of explanations (`sparsecircuits explain...",
    ),
    "import": (
        "sparsecircuits.imports.commands",
        "Convert a model trained elsewhere into a run folder every...",
    ),
    "patch": (
        "sparsecircuits.interp.commands",
        "Patch clean activations into the corrupted run, one layer...",
    ),
    "trace": (
        "sparsecircuits.interp.commands",
        "Causal tracing (ROME): noise the tokens that decide the...",
    ),
    "lens": (
        "sparsecircuits.interp.lens_commands",
        "Unembed the residual stream after every layer (logit...",
    ),
    "tuned-lens": (
        "sparsecircuits.interp.lens_commands",
        "Train a tuned lens for RUN (one affine map per layer,...",
    ),
    "attention": (
        "sparsecircuits.interp.attention_commands",
        "Write OUT/attention.html: every head's attention on...",
    ),
    "heads": (
        "sparsecircuits.interp.attention_commands",
        "Score every head as a previous-token, duplicate-token and...",
    ),
    "probe": (
        "sparsecircuits.interp.attention_commands",
        "Probe every layer for which prompt of a TASK pair it...",
    ),
    "generate": (
        "sparsecircuits.sae.commands",
        "Continue PROMPT with RUN, and with every --steer the same...",
    ),
    "sae": (
        "sparsecircuits.sae.commands",
        "Sparse autoencoders and transcoders on any hook point of...",
    ),
    "view": (
        "sparsecircuits.viewer.commands",
        "Browse models, circuits, explained units and prompts in a...",
    ),
    "puzzles": (
        "sparsecircuits.explain.commands",
        "Synthetic units with a known explanation: does the scorer...",
    ),
}

# Commands whose name is a Python keyword have a function of another name.
STAGE_FUNCTIONS = {"import": "import_", "tuned-lens": "tuned_lens"}


class StageGroup(click.Group):
    """A command group that imports each later stage's command on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *STAGE_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in STAGE_COMMANDS and name not in self.commands:
            module = importlib.import_module(STAGE_COMMANDS[name][0])
            self.add_command(getattr(module, STAGE_FUNCTIONS.get(name, name)), name)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                rows.append((name, self.commands[name].get_short_help_str(limit=60)))
            else:
                rows.append((name, STAGE_COMMANDS[name][1]))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=StageGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sparsecircuits")
def cli() -> None:
    """Train weight-sparse transformers on Python code and read their circuits."""


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(run: Path, as_json: bool) -> None:
    """Sizes, density and loss of a trained run or checkpoint."""
    from sparsecircuits.loading import load_run
    from sparsecircuits.train.summary import summarize_run

    summary = summarize_run(load_run(run))
    if as_json:
        click.echo(json_text(summary))
        return
    model = summary["config"]["model"]
    val = summary["val_loss"]
    click.echo(f"checkpoint      {summary['path']}")
    click.echo(
        f"shape           {model['n_layer']} layers, d_model {model['d_model']}, "
        f"n_ctx {model['n_ctx']}, vocab {model['vocab_size']}"
    )
    click.echo(
        f"parameters      {summary['total_params']:,} total, {summary['nonzero_params']:,} nonzero"
    )
    click.echo(
        f"density         {summary['density']:.4f} of {summary['sparsified_params']:,} "
        "sparsified parameters are nonzero"
    )
    for kind, density in summary["density_by_kind"].items():
        click.echo(f"  {kind:<22}{density:.4f}")
    click.echo(f"validation loss {val:.4f} nats/token" if val is not None else "validation loss -")
    click.echo(
        f"trained         {summary['tokens_trained'] or 0:,} tokens ({summary['steps'] or 0} steps)"
    )
    data = summary["config"].get("data") or {}
    if data.get("description"):
        packages = data.get("packages") or []
        listed = f" ({len(packages)} packages, listed in its config.json)" if packages else ""
        click.echo(f"corpus          {data['description']}{listed}")
        click.echo("tokenizer       the BPE trained on that corpus (tokenizer.json beside it)")


# The shipped model whose quote circuit is small enough to read (AbsTopK, attention sink).
REFERENCE_SPARSE = Path("models/reference-sparse-topk")


@cli.command()
@click.option("--out", default="runs/demo", show_default=True, type=OutputPath())
@click.option(
    "--tokens", default=1_500_000, show_default=True, type=POSITIVE_INT, help="Token budget."
)
@click.option("--data", default="stdlib", show_default=True, help="Corpus, as for train.")
@click.option(
    "--circuit-model",
    default=REFERENCE_SPARSE,
    show_default=True,
    type=click.Path(path_type=Path),
    help="Shipped model: its quote circuit, completions and tasks beside the demo run's.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def demo(out: Path, tokens: int, data: str, circuit_model: Path, quiet: bool) -> None:
    """The main job: train a small weight-sparse model, prune a circuit, write an HTML report."""
    import time

    from sparsecircuits.circuits.showcase import prune_and_draw
    from sparsecircuits.loading.checkpoint import latest_name
    from sparsecircuits.report import write_run_report
    from sparsecircuits.train import train as run_training
    from sparsecircuits.train.commands import training_speed
    from sparsecircuits.train.flags import build_train_configs

    started = time.perf_counter()
    resume = latest_name(out) is not None
    # The report's loss plot also follows two tasks: one learned early, and quote closing.
    scored = "while_return_true,single_double_quote"
    flags = {"data": data, "eval_tasks": scored} if not resume else {}
    model_config, train_config = build_train_configs("small", out, resume, tokens, flags)
    click.echo(
        f"[1/5] training a small weight-sparse model on {data} ({tokens:,} tokens)"
        + (", resuming" if resume else "")
    )
    result = run_training(model_config, train_config, out, resume=resume, progress=not quiet)
    click.echo(f"      validation loss {result.val_loss:.4f} nats/token, {training_speed(result)}")
    circuit, explanations = None, None
    if circuit_model.exists():
        click.echo(f"[2/5] pruning the quote-closing circuit of {circuit_model}")
        try:
            circuit = prune_and_draw(
                circuit_model, out, log=lambda line: click.echo(f"      {line}")
            )
        except UserError as error:  # a model too weak for the task still gets its report
            click.echo(f"      no circuit: {error}")
        else:
            metrics = circuit["record"]["metrics"]
            click.echo(
                f"      {metrics['nodes']} nodes, {metrics['edges']} edges, circuit loss "
                f"{metrics['circuit_loss']:.4f} (ablated {metrics['ablated_circuit_loss']:.4f}, "
                f"random {metrics['random_circuit_loss']:.4f}), {metrics['seconds']:.0f} s"
            )
        click.echo(
            f"[3/5] explaining its nodes and {DEMO_NEURONS} neurons of {circuit_model}, offline"
        )
        explanations, circuit = explain_demo(circuit_model, out, circuit)
    else:
        click.echo(f"[2/5] no model at {circuit_model}: skipping the circuit and explanations")
    click.echo("[4/5] writing the report")
    report = write_run_report(
        out,
        out / "report.html",
        circuit=circuit,
        reference=circuit_model if circuit_model.exists() else None,
        explanations=explanations,
        **{"demo wall time": f"{time.perf_counter() - started:.0f} s"},
    )
    click.echo("[5/5] writing the viewer's static pages")
    viewer = export_demo_viewer(out, circuit_model)
    click.echo(f"report: {report}")
    click.echo(f"viewer: {viewer} (opens from disk), or live with the prompt page:")
    runs = " ".join(str(path) for path in (out, circuit_model) if path.exists())
    extras = "".join(
        f" --{flag} {path}"
        for flag, path in (
            ("circuits", out / "circuit.json"),
            ("db", out / "explanations.sqlite"),
        )
        if path.exists()
    )
    click.echo(f"  .venv/bin/sparsecircuits view {runs}{extras}")
    click.echo(f"({time.perf_counter() - started:.0f} s in all)")


def export_demo_viewer(out: Path, circuit_model: Path) -> Path:
    """The demo's runs, circuit and explanations as static viewer pages in OUT/viewer."""
    from sparsecircuits.viewer.export import export_site
    from sparsecircuits.viewer.site import Site

    runs = [out] + ([circuit_model] if circuit_model.exists() else [])
    circuits = [out / "circuit.json"] if (out / "circuit.json").exists() else []
    db = out / "explanations.sqlite"
    site = Site(runs, circuits, db if db.exists() else None)
    folder = out / "viewer"
    export_site(site, folder, n_tokens=20_000)
    return folder / "index.html"


DEMO_NEURONS = 24  # explained beside the circuit's nodes; the demo must stay under 10 minutes


def explain_demo(model_path: Path, out: Path, circuit: dict | None) -> tuple[list, dict | None]:
    """Offline explanations of the circuit's nodes and a sample of neurons; the circuit
    drawn again with them."""
    import time

    from sparsecircuits.circuits.circuit_file import read_circuit
    from sparsecircuits.circuits.showcase import draw_for_report
    from sparsecircuits.explain.showcase import explain_for_report
    from sparsecircuits.loading import load_run

    started = time.perf_counter()
    loaded = load_run(model_path)
    circuit_file = out / "circuit.json" if circuit is not None else None
    rows = explain_for_report(
        loaded,
        model_path,
        circuit_file,
        out / "explanations.sqlite",
        sample=DEMO_NEURONS,
        log=lambda line: None,
    )
    if circuit is not None:
        record = read_circuit(circuit_file)
        circuit = draw_for_report(loaded, record, out, circuit["total_nodes"])
    scored = [row["score_top_and_random"] for row in rows]
    scored = [score for score in scored if score is not None]
    mean = sum(scored) / len(scored) if scored else float("nan")
    click.echo(
        f"      {len(rows)} units, mean top-and-random score {mean:.3f} over "
        f"{len(scored)} scored ({len(rows) - len(scored)} unscored), "
        f"{time.perf_counter() - started:.0f} s; best: {rows[0]['unit']}: "
        f"{rows[0]['explanation']}"
        if rows
        else "      nothing new to explain"
    )
    return rows, circuit


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=OutputPath(), help="New model folder.")
def export(run: Path, out: Path) -> None:
    """Copy a run's latest checkpoint into a small, self-describing model folder.

    Weights only (no optimizer state), mostly-zero tensors packed, plus README.md with the
    exact `sparsecircuits train` command that reproduces the run.
    """
    from sparsecircuits.train.export import export_run

    size = export_run(run, out)
    click.echo(f"wrote {out} ({size / 1e6:.1f} MB)")


def main() -> None:
    if len(sys.argv) == 1:  # a bare `sparsecircuits` asks what it can do: that is not an error
        click.echo(cli.get_help(click.Context(cli, info_name="sparsecircuits")))
        return
    try:
        cli.main(standalone_mode=False)
    except UserError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        click.echo(f"error: {error.format_message()}", err=True)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        click.echo("error: interrupted; the last complete checkpoint is kept", err=True)
        sys.exit(130)
