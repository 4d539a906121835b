"""`sparsecircuits patch` and `trace`: activation / attribution patching and causal tracing
of a model on the clean (A) and corrupted (B) prompts of a built-in task (--task) or of a
pairs file (--pairs), as PNG, HTML and JSON."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from sparsecircuits.cli_types import (
    DEVICE_OPTION,
    PAIR_COUNT,
    POSITIVE_INT,
    SEED,
    OutputFolder,
    splice_options,
)

if TYPE_CHECKING:  # commands import torch only when run, so `--help` answers at once
    from sparsecircuits.interp.task_pairs import TaskInput


def task_options(command):  # noqa: ANN001, ANN201 (a click decorator)
    options = [
        click.argument("run", type=click.Path(path_type=Path)),
        click.option("--task", help="A built-in task (`sparsecircuits tasks list`)."),
        click.option(
            "--pairs",
            "pairs_file",
            type=click.Path(path_type=Path),
            help="Your own pairs instead, JSONL: prompt_a, prompt_b, answer_a, answer_b.",
        ),
        click.option("--out", required=True, type=OutputFolder(), help="Folder for the figures."),
        click.option(
            "--n",
            "n_pairs",
            type=PAIR_COUNT,
            default=32,
            show_default=True,
            help="Pairs of the task's test split (a pairs file is used whole).",
        ),
        click.option("--seed", type=SEED, default=0, show_default=True),
        click.option(
            "--last", type=POSITIVE_INT, help="Only the last N positions (position scans)."
        ),
        click.option("--device", **DEVICE_OPTION),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.command()
@task_options
@click.option(
    "--site",
    type=click.Choice(["resid", "heads", "neurons", "latents"]),
    default="resid",
    show_default=True,
    help="Residual stream by position, head outputs, MLP neurons, or an SAE's latents (--sae).",
)
@splice_options("Splice this SAE into RUN first: --site latents patches its latents one by one.")
@click.option(
    "--attribution",
    is_flag=True,
    help="Estimate every patch at once (2 forward + 1 backward passes).",
)
@click.option(
    "--metric", type=click.Choice(["logit_diff", "prob"]), default="logit_diff", show_default=True
)
def patch(
    run: Path,
    task: str | None,
    pairs_file: Path | None,
    out: Path,
    n_pairs: int,
    seed: int,
    last: int | None,
    device: str,
    site: str,
    sae_folder: Path | None,
    force: bool,
    attribution: bool,
    metric: str,
) -> None:
    """Patch clean activations into the corrupted run, one layer x position/head/neuron (or
    SAE latent) at a time, and show how much of the answer each restores."""
    from sparsecircuits.errors import UserError
    from sparsecircuits.interp.patching import PATCH_SITES, latent_site, patching
    from sparsecircuits.interp.reports import load_pairs, write_patch_results

    if (site == "latents") != (sae_folder is not None):
        raise UserError("--site latents and --sae DIR go together")
    loaded, pairs = load_pairs(run, task, pairs_file, n_pairs, seed, device)
    sites = PATCH_SITES
    if sae_folder is not None:
        from sparsecircuits.sae.splice import latents_hook, run_with_sae, written_layer

        loaded, splice = run_with_sae(loaded, sae_folder, force)
        where = latent_site(
            latents_hook(splice.sae), written_layer(splice.sae), splice.sae.config.d_sae
        )
        sites = {**PATCH_SITES, "latents": where}
    method = "attribution" if attribution else "activation"
    token_text = loaded.tokenizer.id_to_token_text
    result = patching(
        loaded.model,
        pairs.batch,
        site,
        method,
        metric,
        sites=sites,
        last=last,
        token_text=token_text,
    )
    write_patch_results([result], pairs.label, out)


@click.command()
@task_options
@click.option(
    "--kind",
    type=click.Choice(["resid", "mlp", "attn"]),
    multiple=True,
    help="Hidden states to restore (repeatable; default all three).",
)
@click.option(
    "--samples", type=POSITIVE_INT, default=5, show_default=True, help="Noise draws per pair."
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object: the results and, per pair, the clean positions noised.",
)
def trace(
    run: Path,
    task: str | None,
    pairs_file: Path | None,
    out: Path,
    n_pairs: int,
    seed: int,
    last: int | None,
    device: str,
    kind: tuple[str, ...],
    samples: int,
    as_json: bool,
) -> None:
    """Causal tracing (ROME): noise the tokens that decide the answer (the clean tokens that
    differ from the corrupted prompt's, by a token-level diff), restore one hidden state at a
    time, and map where the answer's probability comes back."""
    from sparsecircuits.files import json_text
    from sparsecircuits.interp.patching import causal_trace
    from sparsecircuits.interp.reports import load_pairs, write_patch_results

    loaded, pairs = load_pairs(run, task, pairs_file, n_pairs, seed, device)
    token_text = loaded.tokenizer.id_to_token_text
    results = [
        causal_trace(
            loaded.model, pairs.batch, name, samples, seed, last=last, token_text=token_text
        )
        for name in dict.fromkeys(kind or ("resid", "mlp", "attn"))  # each kind once
    ]
    reports = write_patch_results(results, pairs.label, out, echo=not as_json)
    noised = noised_per_pair(pairs)
    if as_json:
        source = {"task": task} if task is not None else {"pairs_file": str(pairs_file)}
        summary = {**source, "n_pairs": pairs.batch.n_pairs, "skipped": pairs.skipped}
        summary |= {"samples": samples, "seed": seed, "results": reports, "pairs": noised}
        click.echo(json_text(summary))
        return
    count = len(noised)
    mean = sum(len(pair["noised_positions"]) for pair in noised) / count
    last_noised = sum(pair["n_tokens"] - 1 in pair["noised_positions"] for pair in noised)
    click.echo(
        f"noised {mean:.2f} tokens per clean prompt on average over {count} pairs; "
        f"the last token in {last_noised} of them"
    )


def noised_per_pair(pairs: TaskInput) -> list[dict]:
    """Per pair, in batch order: its index in the input, the clean prompt's length in tokens
    and the clean positions causal tracing noised."""
    lengths = (pairs.batch.clean_last + 1).tolist()
    return [
        {"pair": index, "n_tokens": length, "noised_positions": list(alignment.differing)}
        for index, length, alignment in zip(
            pairs.kept, lengths, pairs.batch.alignments, strict=True
        )
    ]
