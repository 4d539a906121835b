"""`sparsecircuits sae train|eval`."""

from __future__ import annotations

from pathlib import Path

import click

from sparsecircuits.cli_types import POSITIVE_FLOAT, POSITIVE_INT, SEED, OutputFolder
from sparsecircuits.errors import UserError
from sparsecircuits.files import json_text
from sparsecircuits.sae.config import KINDS


@click.group()
def sae() -> None:
    """Sparse autoencoders and transcoders on any hook point of any run."""


@sae.command("train")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--hook", required=True, help="Hook point read, e.g. blocks.2.hook_resid_post.")
@click.option("--out-hook", help="A transcoder's target hook (default: reconstruct --hook).")
@click.option("--arch", type=click.Choice(KINDS), default="topk", show_default=True)
@click.option("--width", type=POSITIVE_INT, required=True, help="Latents (d_sae).")
@click.option("--k", type=POSITIVE_INT, help="topk / batchtopk: latents kept per activation.")
@click.option("--l1", "l1_coef", type=POSITIVE_FLOAT, help="relu: the L1 coefficient.")
@click.option("--l0", "l0_coef", type=POSITIVE_FLOAT, help="jumprelu: the L0 coefficient.")
@click.option("--tokens", type=POSITIVE_INT, default=1_000_000, show_default=True)
@click.option("--batch-size", type=POSITIVE_INT, default=4096, show_default=True)
@click.option("--lr", type=POSITIVE_FLOAT, default=4e-4, show_default=True)
@click.option(
    "--buffer-windows",
    type=POSITIVE_INT,
    default=32,
    show_default=True,
    help="Context windows of activations shuffled together.",
)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--out", required=True, type=OutputFolder(), help="The SAE's folder.")
@click.option("--resume", is_flag=True, help="Go on exactly where a killed training stopped.")
@click.option("--quiet", is_flag=True)
def sae_train(run: Path, hook: str, out_hook: str | None, arch: str, width: int, **flags) -> None:
    """Train an SAE (or transcoder) on RUN's activations, streamed from its training split."""
    from sparsecircuits.loading import load_run
    from sparsecircuits.sae.config import SAEConfig
    from sparsecircuits.sae.training import SAETrainConfig, train_sae

    loaded = load_run(run, device=flags["device"])
    widths = {name: hook_width(loaded.model, name) for name in filter(None, (hook, out_hook))}
    config = SAEConfig(
        arch=arch,
        d_in=widths[hook],
        d_sae=width,
        hook=hook,
        out_hook=out_hook,
        d_out=widths.get(out_hook, 0) if out_hook else 0,
        k=flags["k"],
        l1_coef=flags["l1_coef"],
        l0_coef=flags["l0_coef"],
    )
    names = ("tokens", "batch_size", "lr", "buffer_windows", "seed", "device")
    train = SAETrainConfig(**{name: flags[name] for name in names})
    summary = train_sae(loaded, config, train, flags["out"], flags["resume"], not flags["quiet"])
    click.echo(
        f"trained {summary['tokens_trained']:,} activations into {flags['out']}: explained "
        f"variance {summary['explained_variance']:.3f}, L0 {summary['l0']:.1f}, dead "
        f"{summary['dead_latents']:.1%} ({summary['seconds']:.0f} s)"
    )


def hook_width(model, name: str) -> int:  # noqa: ANN001 (a GPT; imported lazily)
    """The width of the vector a hook holds at each position (one forward pass of a token)."""
    import torch

    resolved = model.resolve_hook_names(name)
    if len(resolved) != 1 or resolved[0] != name:
        raise UserError(f"--hook {name} must name one hook point, not a pattern")
    with model.cache(name) as cache:
        model(torch.zeros(1, 1, dtype=torch.long, device=next(model.parameters()).device))
    shape = cache[name].shape
    if len(shape) != 3:
        raise UserError(f"{name} holds {list(shape[2:])} per position; an SAE reads one vector")
    return shape[-1]


@sae.command("eval")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--run", "run_path", type=click.Path(path_type=Path), help="Default: the SAE's.")
@click.option("--tokens", type=click.IntRange(1, 10_000_000), default=65_536, show_default=True)
@click.option("--force", is_flag=True, help="Use an SAE trained on another model anyway.")
@click.option("--json", "as_json", is_flag=True)
def sae_eval(folder: Path, run_path: Path | None, tokens: int, force: bool, as_json: bool) -> None:
    """Reconstruction (MSE, explained variance, L0, dead latents, cosine) and what splicing
    the SAE into its model costs (loss recovered, KL) on held-out tokens."""
    from sparsecircuits.loading import load_run
    from sparsecircuits.sae.evaluation import evaluate_sae
    from sparsecircuits.sae.files import load_sae

    unchecked = load_sae(folder)
    path = run_path or Path(unchecked.config.model_path)
    if not str(path):
        raise UserError(f"{folder} does not say which run it belongs to: pass --run")
    run = load_run(path)
    sae = load_sae(folder, model_sha256=run.weights_sha256, force=force)
    result = evaluate_sae(run, sae, tokens)
    if as_json:
        click.echo(json_text(result))
        return
    for name, value in result.items():
        click.echo(f"{name:<20}{value:.4f}" if isinstance(value, float) else f"{name:<20}{value}")


@click.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--prompt", required=True, help="The text to continue.")
@click.option(
    "--steer",
    "steers",
    multiple=True,
    help="SAE_FOLDER:LATENT=VALUE or HOOK:INDEX=VALUE, held at every position; repeatable.",
)
@click.option(
    "--tokens", "max_new_tokens", type=click.IntRange(1, 4096), default=32, show_default=True
)
@click.option(
    "--temperature",
    type=click.FloatRange(0, 100),
    default=0.0,
    show_default=True,
    help="0: greedy; else sampled from softmax(logits / T).",
)
@click.option("--top-k", type=POSITIVE_INT, help="Sample from the k likeliest tokens only.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option(
    "--cost-tokens",
    type=click.IntRange(0, 1_000_000),
    default=8192,
    show_default=True,
    help="Held-out tokens on which the steer's loss cost is measured (0: skip).",
)
@click.option("--force", is_flag=True, help="Use an SAE trained on another model anyway.")
@click.option("--json", "as_json", is_flag=True)
def generate(run: Path, prompt: str, steers: tuple[str, ...], **options) -> None:
    """Continue PROMPT with RUN, and with every --steer the same continuation steered (same
    seed), plus what the steer costs the model's loss on held-out text."""
    from sparsecircuits.loading import load_run
    from sparsecircuits.sae.steering import parse_steer, steered_generation, steering_edits

    loaded = load_run(run)
    parsed = [parse_steer(text) for text in steers]
    edits = steering_edits(loaded.model, parsed, loaded.weights_sha256, options["force"])
    result = steered_generation(loaded, prompt, edits, options)
    if options["as_json"]:
        click.echo(json_text(result))
        return
    click.echo(prompt + "\u2588" + result["completion"])
    if steers:
        click.echo(f"--- steered ({', '.join(steers)}):")
        click.echo(prompt + "\u2588" + result["steered_completion"])
        if result.get("loss_cost") is not None:
            click.echo(
                f"loss on {result['cost_tokens']:,} held-out tokens: {result['loss']:.4f} -> "
                f"{result['steered_loss']:.4f} nats/token (+{result['loss_cost']:.4f})"
            )
