"""`sparsecircuits attention`, `heads` and `probe`: one prompt's attention patterns as a page,
head detector scores, and linear probes of a task's property after every layer."""

from __future__ import annotations

from pathlib import Path

import click

from sparsecircuits.cli_types import (
    DEVICE_OPTION,
    PAIR_COUNT,
    POSITIVE_INT,
    SEED,
    OutputFolder,
    count_at_least,
    splice_options,
)
from sparsecircuits.errors import UserError

RUN_ARGUMENT = click.argument("run", type=click.Path(path_type=Path))
OUT_OPTION = click.option("--out", required=True, type=OutputFolder(), help="Folder for the files.")


@click.command()
@RUN_ARGUMENT
@click.option("--prompt", required=True, help="The text whose attention to show.")
@OUT_OPTION
@click.option("--device", **DEVICE_OPTION)
def attention(run: Path, prompt: str, out: Path, device: str) -> None:
    """Write OUT/attention.html: every head's attention on PROMPT, to hover over token by token
    (and OUT/attention.json, the same numbers)."""
    import torch

    from sparsecircuits.interp.attention import attention_patterns, write_attention
    from sparsecircuits.loading import load_run

    if not prompt:
        raise UserError("the prompt is empty: give --prompt some text")
    loaded = load_run(run, device=device)
    tokenizer = loaded.tokenizer  # a UserError for a run without one
    ids = tokenizer.encode(prompt)
    n_ctx = loaded.model_config.n_ctx
    if len(ids) > n_ctx:
        raise UserError(f"the prompt is {len(ids)} tokens long; this model reads at most {n_ctx}")
    patterns = attention_patterns(loaded.model, torch.tensor(ids))
    texts = [tokenizer.id_to_token_text(i) for i in ids]
    title = f"attention of {Path(run).resolve().name} on a {len(ids)}-token prompt"
    paths = write_attention(texts, patterns, out, title)
    click.echo("wrote " + ", ".join(str(path) for path in paths))


@click.command()
@RUN_ARGUMENT
@OUT_OPTION
@click.option(
    "--seq-len", type=count_at_least(4), help="Tokens per sequence (default: n_ctx, <= 64)."
)
@click.option("--sequences", type=POSITIVE_INT, default=16, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", **DEVICE_OPTION)
def heads(
    run: Path, out: Path, seq_len: int | None, sequences: int, seed: int, device: str
) -> None:
    """Score every head as a previous-token, duplicate-token and induction head on random
    token sequences; write OUT/NAME.{png,html,json} and print the top 3 of each."""
    from sparsecircuits.interp.attention import (
        DETECTORS,
        detect_heads,
        drawable_token_ids,
        top_heads,
        write_head_scores,
    )
    from sparsecircuits.loading import load_run

    loaded = load_run(run, device=device)
    seq_len = seq_len or min(loaded.model_config.n_ctx, 64)
    scores = detect_heads(loaded.model, seq_len, sequences, seed, drawable_token_ids(loaded))
    measured = f"{sequences} random sequences of {seq_len} tokens, seed {seed}"
    summary = {"sequences": sequences, "sequence length": seq_len, "seed": seed}
    paths = write_head_scores(scores, out, summary)
    click.echo(f"top heads as layer.head score (mean attention probability, {measured}):")
    for name, values in scores.items():
        best = ", ".join(f"{layer}.{head} {score:.3f}" for layer, head, score in top_heads(values))
        click.echo(f"  {name} ({DETECTORS[name]}): {best}")
    click.echo(f"wrote {len(paths)} files to {out}")


@click.command()
@RUN_ARGUMENT
@click.option("--task", required=True, help="A built-in task (`sparsecircuits tasks list`).")
@OUT_OPTION
@click.option("--n", "n_pairs", type=PAIR_COUNT, default=256, show_default=True, help="Pairs.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option(
    "--site",
    type=click.Choice(["resid", "attn", "mlp"]),
    default="resid",
    show_default=True,
    help="Residual stream after each layer, or each layer's attention or MLP output.",
)
@splice_options("Also probe this SAE's latents (spliced into RUN), as one more row.")
@click.option("--device", **DEVICE_OPTION)
def probe(
    run: Path,
    task: str,
    out: Path,
    n_pairs: int,
    seed: int,
    site: str,
    sae_folder: Path | None,
    force: bool,
    device: str,
) -> None:
    """Probe every layer for which prompt of a TASK pair it reads (A or B) at the last token:
    held-out accuracy beside a shuffled-label control and the majority baseline."""
    from sparsecircuits.interp.figures import write_grid
    from sparsecircuits.interp.probes import CONTROL_SHUFFLES, probe_grid, task_probe
    from sparsecircuits.loading import load_run

    loaded = load_run(run, device=device)
    extra, extra_width = {}, 0
    if sae_folder is not None:
        from sparsecircuits.sae.splice import latents_hook, run_with_sae

        loaded, splice = run_with_sae(loaded, sae_folder, force)
        extra = {"SAE latents": latents_hook(splice.sae)}
        extra_width = splice.sae.config.d_sae
    results = task_probe(loaded, task, n_pairs, seed, site, extra, extra_width)
    first = results[0]
    title = f"{task}: A vs B probe ({site})"
    summary = {
        "probed": "which prompt of a pair (A = 0, B = 1), at each prompt's last token",
        "task": task,
        "pairs asked for": n_pairs,
        "seed": seed,
        "site": site,
        "sae": None if sae_folder is None else f"{sae_folder} ({extra['SAE latents']})",
    }
    paths = write_grid(probe_grid(results, title, summary), out / f"{task}-probe-{site}")
    click.echo(
        f"held-out accuracy telling prompt A from B of {task}, at each prompt's last token: "
        f"{first.n_train} train / {first.n_test} test prompts (a pair's two prompts share a side)"
    )
    click.echo(f"{'layer':<12}{'accuracy':>10}{'control':>16}{'majority':>10}")
    for result in results:
        control = f"{result.control_accuracy:.3f} ± {result.control_std:.3f}"
        click.echo(
            f"{result.name:<12}{result.accuracy:>10.3f}{control:>16}{result.majority_baseline:>10.3f}"
        )
    click.echo(
        "control: the same probe trained on shuffled labels "
        f"(mean ± sd over {CONTROL_SHUFFLES} shuffles)"
    )
    click.echo("wrote " + ", ".join(str(path) for path in paths))
