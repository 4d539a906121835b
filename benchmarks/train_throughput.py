"""Training throughput: weight-sparse vs dense, same shape, side by side in one run.

Both use the project's own training step (forward, backward, gradient RMS normalisation,
AdamW); the sparse one also projects every sparsified tensor onto its kept fraction after each
step, as training does. Steps alternate between the two models so machine noise hits both.

    .venv/bin/python benchmarks/train_throughput.py [--preset small] [--steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

from sparsecircuits.model import GPT
from sparsecircuits.train.config import preset_configs
from sparsecircuits.train.distributed import ProcessGroup
from sparsecircuits.train.trainer import build_optimizer, training_step
from sparsecircuits.train.weight_sparsity import project_to_density


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model")
    parser.add_argument("--density", type=float, default=1 / 16)
    parser.add_argument("--d-model", type=int, help="override the preset's width")
    parser.add_argument("--n-ctx", type=int, help="override the preset's context")
    parser.add_argument("--afrac", type=float, help="AbsTopK kept fraction (default: preset's)")
    args = parser.parse_args()

    model_config, config = preset_configs(args.preset)
    overrides = {"d_model": args.d_model, "n_ctx": args.n_ctx, "afrac": args.afrac}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if "d_model" in overrides:
        overrides["d_mlp"] = 4 * overrides["d_model"]
    model_config = replace(model_config, **overrides)
    single = ProcessGroup(0, 1, 0)
    no_autocast = torch.autocast("cpu", enabled=False)
    generator = torch.Generator().manual_seed(0)
    shape = (config.batch_size, model_config.n_ctx)
    inputs = torch.randint(0, model_config.vocab_size, shape, generator=generator)
    targets = torch.randint(0, model_config.vocab_size, shape, generator=generator)

    runs = {}
    for name, density in (("dense", 1.0), ("sparse", args.density)):
        torch.manual_seed(0)
        model = GPT(model_config)
        project_to_density(model, density)
        runs[name] = (model, build_optimizer(model, config), density, [])

    def step(name: str) -> float:
        model, optimizer, density, _ = runs[name]
        started = time.perf_counter()
        training_step(
            model, model, optimizer, inputs, targets, (density, None), config, no_autocast, single
        )
        return time.perf_counter() - started

    for name in runs:  # warm-up
        step(name)
    for _ in range(args.steps):
        for name in runs:
            runs[name][3].append(step(name))

    tokens = config.batch_size * model_config.n_ctx
    print(
        f"preset {args.preset}: {model_config.n_layer} layers, d_model {model_config.d_model}, "
        f"afrac {model_config.afrac}, "
        f"batch {config.batch_size} x {model_config.n_ctx} tokens, "
        f"{torch.get_num_threads()} threads, {args.steps} timed steps each"
    )
    medians = {}
    for name, (model, _, density, times) in runs.items():
        medians[name] = statistics.median(times)
        nonzero = sum(int(p.count_nonzero()) for p in model.parameters())
        print(
            f"{name:>6}: kept fraction {density:.4f}, {nonzero:,} nonzero params, "
            f"median step {medians[name] * 1000:.0f} ms, {tokens / medians[name]:,.0f} tokens/s"
        )
    ratio = medians["sparse"] / medians["dense"]
    print(f"sparse step time / dense step time = {ratio:.3f} (goal <= 1.15)")


if __name__ == "__main__":
    main()
