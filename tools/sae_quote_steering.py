"""Steering the quote circuit through one SAE latent (docs/sae.md).

Train (or load) a TopK SAE on a hook of the shipped sparse model, choose the latent whose
activation at the last token best separates `('` prompts from `("` prompts on the quote
task's validation pairs, then on the test pairs clamp it, at every position, to its mean on
the other quote type: how many answers flip from `')` to `")` (and back), against clamping
random latents of the same SAE to the same values; and what the clamp costs the model's loss
on held-out text.

    .venv/bin/python tools/sae_quote_steering.py [--sae runs/sae-quote] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from sparsecircuits.loading import load_run
from sparsecircuits.sae import SAEConfig, load_sae
from sparsecircuits.sae.steering import clamp_latent, held_out_loss
from sparsecircuits.sae.training import SAETrainConfig, train_sae
from sparsecircuits.tasks import encode_pairs, task_pairs
from sparsecircuits.tasks.metrics import answer_margins

TASK = "single_double_quote"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="models/reference-sparse-topk")
    parser.add_argument("--hook", default="blocks.1.hook_resid_post")
    parser.add_argument("--sae", default="runs/sae-quote", help="SAE folder (trained if absent)")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--controls", type=int, default=20, help="random latents clamped")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    run = load_run(args.run)
    folder = Path(args.sae)
    if not folder.exists():
        width = run.model_config.d_model
        config = SAEConfig(arch="topk", d_in=width, d_sae=args.width, k=args.k, hook=args.hook)
        summary = train_sae(
            run, config, SAETrainConfig(tokens=args.tokens, batch_size=1024), folder
        )
        print(f"trained {folder}: explained variance {summary['explained_variance']:.3f}")
    sae = load_sae(folder, model_sha256=run.weights_sha256)
    sae.eval()

    validation = batch_of(run, "validation")
    test = batch_of(run, "test")
    f = last_token_latents(run, sae, validation)
    n = validation.n_pairs
    single, double = f[:n].mean(dim=0), f[n:].mean(dim=0)
    # The latent most active on each quote type (validation pairs choose; test pairs report).
    latents = {"double": int((double - single).argmax()), "single": int((single - double).argmax())}
    means = {"double": float(double[latents["double"]]), "single": float(single[latents["single"]])}
    with torch.no_grad():
        before = answer_margins(run.model, test)
    n_test = test.n_pairs
    rows = {"single": slice(0, n_test), "double": slice(n_test, 2 * n_test)}
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(sae.config.d_sae, generator=generator).tolist()
    controls = [i for i in order if i not in latents.values()][: args.controls]
    clean = held_out_loss(run, {}, 16_384)
    table = []
    for goal, other in (("double", "single"), ("single", "double")):
        for scale in SCALES:
            value = scale * means[goal]
            # Raise the goal type's latent and silence the other type's.
            edit = chain(
                clamp_latent(sae, latents[goal], value), clamp_latent(sae, latents[other], 0.0)
            )
            flipped = flip_rate(run, test, {sae.config.hook: edit}, rows[other])
            random = [
                flip_rate(run, test, {sae.config.hook: clamp_latent(sae, i, value)}, rows[other])
                for i in controls
            ]
            cost = held_out_loss(run, {sae.config.hook: edit}, 16_384) - clean
            table.append(
                {
                    "flip_to": goal,
                    "scale": scale,
                    "value": value,
                    "flipped": flipped,
                    "random_median": statistics.median(random),
                    "random_max": max(random),
                    "loss_cost": cost,
                }
            )
    result = {
        "run": args.run,
        "hook": sae.config.hook,
        "latents": latents,
        "means": means,
        "wrong_unsteered": {name: float((before[rows[name]] < 0).double().mean()) for name in rows},
        "loss": clean,
        "controls": len(controls),
        "test_pairs": n_test,
        "table": table,
    }
    print(
        f'{folder} at {sae.config.hook}: latent {latents["double"]} fires on (" prompts '
        f"(mean {means['double']:.3f}), latent {latents['single']} on (' prompts "
        f"(mean {means['single']:.3f}); {n_test} test pairs, loss {clean:.4f}"
    )
    print("| flip to | value (x mean) | flipped | random latents: median / max | loss cost |")
    print("|---|---|---|---|---|")
    for row in table:
        print(
            f"| {row['flip_to']} | {row['value']:.2f} ({row['scale']}x) | {row['flipped']:.3f} | "
            f"{row['random_median']:.3f} / {row['random_max']:.3f} | +{row['loss_cost']:.4f} |"
        )
    if args.json:
        print(json.dumps(result))


SCALES = (1, 2, 4, 8)


def flip_rate(run, batch, edits: dict, rows: slice) -> float:  # noqa: ANN001
    """Share of the prompts in `rows` whose answer the edits turn wrong."""
    with torch.no_grad(), run.model.edit(edits):
        margins = answer_margins(run.model, batch)[rows]
    return float((margins < 0).double().mean())


def chain(*edits):  # noqa: ANN001, ANN201
    def edit(act, hook):  # noqa: ANN001, ANN202
        for each in edits:
            act = each(act, hook)
        return act

    return edit


def batch_of(run, split: str):  # noqa: ANN001
    return encode_pairs(task_pairs(TASK, split, 256), run.tokenizer, run.model_config.n_ctx).batch


@torch.no_grad()
def last_token_latents(run, sae, batch) -> torch.Tensor:  # noqa: ANN001
    """[2n, d_sae] the SAE's latents at each prompt's last token."""
    with run.model.cache(sae.config.hook) as cache:
        run.model(batch.tokens)
    acts = cache[sae.config.hook][torch.arange(len(batch.last)), batch.last]
    return sae.encode(acts.float())


if __name__ == "__main__":
    main()
