"""The `sparsecircuits` command. Bad input ends in one line on stderr and exit code 2."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import click

from sparsecircuits.errors import UserError

# CLI flag -> (config, field): which dataclass field a training flag overrides.
TRAIN_FLAGS = {
    "density": ("train", "density"),
    "afrac": ("model", "afrac"),
    "steps": ("train", "steps"),
    "seed": ("train", "seed"),
    "data": ("train", "data"),
    "data_glob": ("train", "data_glob"),
    "device": ("train", "device"),
    "lr": ("train", "lr"),
    "batch_size": ("train", "batch_size"),
    "anneal_end": ("train", "anneal_end"),
    "vocab_size": ("train", "vocab_size"),
    "eval_every": ("train", "eval_every"),
    "checkpoint_every": ("train", "checkpoint_every"),
    "n_layer": ("model", "n_layer"),
    "d_model": ("model", "d_model"),
    "n_ctx": ("model", "n_ctx"),
    "d_head": ("model", "d_head"),
    "learned_positions": ("model", "learned_positions"),
    "bigram_table": ("model", "bigram_table"),
    "attention_sink": ("model", "attention_sink"),
}
# Flags that may differ on --resume without changing what is trained.
RESUME_MAY_CHANGE = {"device", "eval_every", "checkpoint_every"}


# Commands of the later pipeline stages live beside their code and import torch; they are
# loaded only when run, so `sparsecircuits --help` answers at once. name -> (module, short help)
STAGE_COMMANDS = {
    "tasks": (
        "sparsecircuits.tasks.commands",
        "The 20 binary next-token tasks: list them, show their...",
    ),
    "prune": (
        "sparsecircuits.circuits.commands",
        "Find the smallest circuit of RUN that does a task at the...",
    ),
    "circuit": ("sparsecircuits.circuits.commands", "Check and draw saved circuit files."),
    "frontier": (
        "sparsecircuits.circuits.commands",
        "Validation loss against circuit size (geometric mean of...",
    ),
}


class StageGroup(click.Group):
    """A command group that imports each later stage's command on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *STAGE_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in STAGE_COMMANDS and name not in self.commands:
            module = importlib.import_module(STAGE_COMMANDS[name][0])
            self.add_command(getattr(module, name), name)
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
@click.option("--preset", default=None, help="tiny, small or paper (default small).")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="Run directory (checkpoints, metrics, plots).",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly where it stopped.")
@click.option("--density", type=float, help="Kept fraction of weights, e.g. 0.0625; 1 = dense.")
@click.option("--afrac", type=float, help="AbsTopK activation kept fraction (default: off).")
@click.option("--steps", type=int, help="Optimizer steps.")
@click.option("--tokens", type=int, help="Token budget (sets --steps).")
@click.option("--seed", type=int)
@click.option("--data", help="stdlib (default), a directory, a .txt/.jsonl file, or hf:NAME.")
@click.option("--data-glob", help="File pattern inside a --data directory (default **/*.py).")
@click.option("--device", help="cpu or cuda (bf16 autocast).")
@click.option("--lr", type=float, help="Peak learning rate.")
@click.option("--batch-size", type=int, help="Sequences per step (over all processes).")
@click.option("--anneal-end", type=float, help="Fraction of training spent annealing L0.")
@click.option("--vocab-size", type=int, help="BPE vocabulary size.")
@click.option("--eval-every", type=int, help="Steps between validation losses.")
@click.option("--checkpoint-every", type=int, help="Steps between checkpoints.")
@click.option("--n-layer", type=int)
@click.option("--d-model", type=int)
@click.option("--n-ctx", type=int)
@click.option("--d-head", type=int)
@click.option("--learned-positions/--no-learned-positions", default=None)
@click.option("--bigram-table/--no-bigram-table", default=None)
@click.option("--attention-sink/--no-attention-sink", default=None)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(
    preset: str | None, out: Path, resume: bool, tokens: int | None, quiet: bool, **flags: object
) -> None:
    """Train a weight-sparse (or, with --density 1, dense) GPT."""
    from sparsecircuits.train import train as run_training

    model_config, train_config = build_train_configs(preset, out, resume, tokens, flags)
    result = run_training(model_config, train_config, out, resume=resume, progress=not quiet)
    click.echo(
        f"trained {result.steps} steps ({result.tokens:,} tokens) into {out}: "
        f"validation loss {result.val_loss:.4f} nats/token, {result.tokens_per_second:,.0f} "
        f"tokens/s, {result.seconds:.0f} s"
    )


def build_train_configs(
    preset: str | None, out: Path, resume: bool, tokens: int | None, flags: dict
) -> tuple:
    """Preset + flags for a new run; the saved configs (checked against flags) on --resume."""
    from sparsecircuits.model import GPTConfig
    from sparsecircuits.train import TrainConfig, preset_configs, resolve_checkpoint
    from sparsecircuits.train.checkpoint import read_json

    if resume:
        saved = read_json(resolve_checkpoint(out) / "config.json")
        configs = {"model": saved["model"], "train": saved["train"]}
        if preset is not None and preset != configs["train"].get("preset"):
            raise UserError(
                f"config mismatch on --resume: preset was "
                f"{configs['train'].get('preset')}, now {preset}"
            )
    else:
        model_config, train_config = preset_configs(preset or "small")
        configs = {"model": model_config.to_dict(), "train": train_config.to_dict()}
    if tokens is not None:
        batch = flags.get("batch_size") or configs["train"]["batch_size"]
        n_ctx = flags.get("n_ctx") or configs["model"]["n_ctx"]
        flags["steps"] = -(-tokens // (batch * n_ctx))
    for flag, value in flags.items():
        if value is None:
            continue
        section, field = TRAIN_FLAGS[flag]
        current = configs[section][field]
        if resume and flag not in RESUME_MAY_CHANGE and current != value:
            raise UserError(f"config mismatch on --resume: {flag} was {current}, now {value}")
        configs[section][field] = value
    if flags.get("d_model") is not None and not resume:
        configs["model"]["d_mlp"] = 0  # follow the new width: 4 * d_model
    return GPTConfig.from_dict(configs["model"]), TrainConfig.from_dict(configs["train"])


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(run: Path, as_json: bool) -> None:
    """Sizes, density and loss of a trained run or checkpoint."""
    from sparsecircuits.train import load_run
    from sparsecircuits.train.summary import summarize_run

    summary = summarize_run(load_run(run))
    if as_json:
        click.echo(json.dumps(summary, indent=2))
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


REFERENCE_SPARSE = Path("models/reference-sparse")


@cli.command()
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(path_type=Path))
@click.option("--tokens", default=3_000_000, show_default=True, help="Training token budget.")
@click.option("--data", default="stdlib", show_default=True, help="Corpus, as for train.")
@click.option(
    "--circuit-model",
    default=REFERENCE_SPARSE,
    show_default=True,
    type=click.Path(path_type=Path),
    help="Model whose quote-closing circuit the report shows (skipped if missing).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def demo(out: Path, tokens: int, data: str, circuit_model: Path, quiet: bool) -> None:
    """The main job: train a small weight-sparse model, prune a circuit, write an HTML report."""
    import time

    from sparsecircuits.report import write_run_report
    from sparsecircuits.train import train as run_training
    from sparsecircuits.train.checkpoint import latest_name

    started = time.perf_counter()
    resume = latest_name(out) is not None
    flags = {"data": data} if not resume else {}
    model_config, train_config = build_train_configs("small", out, resume, tokens, flags)
    click.echo(
        f"[1/3] training a small weight-sparse model on {data} ({tokens:,} tokens)"
        + (", resuming" if resume else "")
    )
    result = run_training(model_config, train_config, out, resume=resume, progress=not quiet)
    click.echo(
        f"      validation loss {result.val_loss:.4f} nats/token, "
        f"{result.tokens_per_second:,.0f} tokens/s"
    )
    circuit = None
    if circuit_model.exists():
        click.echo(f"[2/3] pruning the quote-closing circuit of {circuit_model}")
        circuit = demo_circuit(circuit_model, out)
        metrics = circuit["record"]["metrics"]
        click.echo(
            f"      {metrics['nodes']} nodes, {metrics['edges']} edges, circuit loss "
            f"{metrics['circuit_loss']:.4f} (ablated {metrics['ablated_circuit_loss']:.4f}, "
            f"random {metrics['random_circuit_loss']:.4f}), {metrics['seconds']:.0f} s"
        )
    else:
        click.echo(f"[2/3] no model at {circuit_model}: skipping the circuit")
    click.echo("[3/3] writing the report")
    report = write_run_report(
        out,
        out / "report.html",
        circuit=circuit,
        **{"demo wall time": f"{time.perf_counter() - started:.0f} s"},
    )
    click.echo(f"report: {report} ({time.perf_counter() - started:.0f} s in all)")


def demo_circuit(
    model_path: Path, out: Path, task: str = "single_double_quote", steps: int = 300, sweep: int = 4
) -> dict:
    """Prune `task` in the model at `model_path`; write the circuit file and its page."""
    from sparsecircuits.circuits import PruneConfig, node_groups, prune_to_target_loss
    from sparsecircuits.circuits.circuit_file import outcome_to_record, write_circuit
    from sparsecircuits.circuits.draw import circuit_svg, node_activations, write_drawing
    from sparsecircuits.circuits.pipeline import DEFAULT_SWEEP
    from sparsecircuits.circuits.task_data import task_batches
    from sparsecircuits.tasks import task_pairs
    from sparsecircuits.train import load_run

    loaded = load_run(model_path)
    name, train, heldout, test = task_batches(loaded, task, None)
    outcome = prune_to_target_loss(
        loaded,
        name,
        train,
        heldout,
        test,
        PruneConfig(steps=steps),
        DEFAULT_SWEEP[:sweep],
        log=lambda line: click.echo(f"      {line}"),
    )
    record = outcome_to_record(loaded, outcome)
    write_circuit(record, out / "circuit.json")
    prompts = [
        text for pair in task_pairs(task, "test", 2) for text in (pair.prompt_a, pair.prompt_b)
    ]
    write_drawing(record, out / "circuit.html", loaded, prompts)
    activations = node_activations(loaded, record, prompts)
    total = sum(group.width for group in node_groups(loaded.model_config))
    return {
        "record": record,
        "svg": circuit_svg(record, activations),
        "page": "circuit.html",
        "total_nodes": total,
    }


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="New model folder.")
def export(run: Path, out: Path) -> None:
    """Copy a run's latest checkpoint into a small, self-describing model folder.

    Weights only (no optimizer state), mostly-zero tensors packed, plus README.md with the
    exact `sparsecircuits train` command that reproduces the run.
    """
    import shutil

    from sparsecircuits.train import load_run, resolve_checkpoint
    from sparsecircuits.train.checkpoint import write_json_atomic
    from sparsecircuits.train.summary import summarize_run
    from sparsecircuits.train.weights_file import save_weights

    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; choose a new folder")
    loaded = load_run(run)
    staging = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_weights(loaded.model.state_dict(), staging / "model.safetensors")
    loaded.tokenizer.save(staging / "tokenizer.json")
    write_json_atomic(staging / "config.json", loaded.config)
    write_json_atomic(staging / "trainer_state.json", loaded.state)
    for extra in ("metrics.jsonl", "loss.png"):
        source = resolve_checkpoint(run).parent.parent / extra
        if source.is_file():
            shutil.copy(source, staging / extra)
    summary = summarize_run(loaded)
    (staging / "README.md").write_text(model_readme(out.name, summary))
    if out.exists():
        out.rmdir()
    staging.rename(out)
    size = sum(file.stat().st_size for file in out.iterdir())
    click.echo(f"wrote {out} ({size / 1e6:.1f} MB)")


def train_command(config: dict, out: str) -> str:
    """The `sparsecircuits train` command line that reproduces a run's saved config."""
    from sparsecircuits.train import preset_configs

    preset = config["train"].get("preset", "custom")
    base_model, base_train = preset_configs(preset if preset != "custom" else "small")
    base = {"model": base_model.to_dict(), "train": base_train.to_dict()}
    words = ["sparsecircuits", "train", "--preset", base["train"]["preset"]]
    for flag, (section, field) in TRAIN_FLAGS.items():
        value = config[section].get(field)
        if flag in RESUME_MAY_CHANGE or value is None or value == base[section].get(field):
            continue
        option = "--" + flag.replace("_", "-")
        if isinstance(value, bool):
            words.append(option if value else option.replace("--", "--no-", 1))
        else:
            words += [option, str(value)]
    return " ".join([*words, "--out", out])


def model_readme(name: str, summary: dict) -> str:
    config = summary["config"]
    return "\n".join(
        [
            f"# {name}",
            "",
            f"- validation loss: {summary['val_loss']:.4f} nats/token",
            f"- parameters: {summary['total_params']:,} total, "
            f"{summary['nonzero_params']:,} nonzero (density {summary['density']:.4f})",
            f"- trained: {summary['tokens_trained']:,} tokens ({summary['steps']} steps)",
            "",
            "Reproduce (the full configuration is in config.json):",
            "",
            "```",
            train_command(config, f"runs/{name}"),
            "```",
            "",
        ]
    )


def main() -> None:
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
