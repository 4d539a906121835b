"""Training throughput: weight-sparse vs dense, same shape, side by side in one run.

Both use the project's own training step (forward, backward, gradient RMS normalisation,
AdamW); the sparse one also projects every sparsified tensor onto its kept fraction after each
step, as training does. Steps alternate between the two models so machine noise hits both.
The top-k projection is also timed on its own, so its share of a sparse step is known. On a
GPU every timing waits for the device (torch.cuda.synchronize) and autocast is bf16, as
training uses it.

    .venv/bin/python benchmarks/train_throughput.py [--preset small] [--steps 20] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
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
    parser.add_argument("--batch-size", type=int, help="override the preset's batch")
    parser.add_argument("--afrac", type=float, help="AbsTopK kept fraction (default: preset's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--json", action="store_true", help="also print the numbers as JSON")
    args = parser.parse_args()

    model_config, config = preset_configs(args.preset)
    overrides = {"d_model": args.d_model, "n_ctx": args.n_ctx, "afrac": args.afrac}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if "d_model" in overrides:
        overrides["d_mlp"] = 4 * overrides["d_model"]
        overrides["n_head"] = 0  # d_model // d_head
    model_config = replace(model_config, **overrides)
    if args.batch_size:
        config = replace(config, batch_size=args.batch_size)
    device = torch.device(args.device)
    single = ProcessGroup(0, 1, 0)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    generator = torch.Generator().manual_seed(0)
    shape = (config.batch_size, model_config.n_ctx)
    inputs = torch.randint(0, model_config.vocab_size, shape, generator=generator).to(device)
    targets = torch.randint(0, model_config.vocab_size, shape, generator=generator).to(device)

    runs = {}
    for name, density in (("dense", 1.0), ("sparse", args.density)):
        torch.manual_seed(0)
        model = GPT(model_config).to(device)
        project_to_density(model, density)
        runs[name] = {
            "model": model,
            "optimizer": build_optimizer(model, config),
            "density": density,
        }

    def step(name: str) -> None:
        run = runs[name]
        model, optimizer = run["model"], run["optimizer"]
        densities = (run["density"], None)
        training_step(model, model, optimizer, inputs, targets, densities, config, autocast, single)

    def project() -> None:
        project_to_density(runs["sparse"]["model"], args.density)

    for name in runs:  # warm-up
        timed(lambda name=name: step(name), device)
    times = {name: [] for name in (*runs, "projection")}
    for _ in range(args.steps):
        for name in runs:
            times[name].append(timed(lambda name=name: step(name), device))
        times["projection"].append(timed(project, device))

    tokens = config.batch_size * model_config.n_ctx
    threads = f"{torch.get_num_threads()} threads" if device.type == "cpu" else str(device)
    print(
        f"preset {args.preset}: {model_config.n_layer} layers, d_model {model_config.d_model}, "
        f"afrac {model_config.afrac}, batch {config.batch_size} x {model_config.n_ctx} tokens, "
        f"{threads}, {args.steps} timed steps each"
    )
    result = {"device": str(device), "tokens_per_step": tokens}
    for name, run in runs.items():
        median = statistics.median(times[name])
        nonzero = sum(int(p.count_nonzero()) for p in run["model"].parameters())
        result[name] = {"step_seconds": median, "tokens_per_second": tokens / median}
        print(
            f"{name:>6}: kept fraction {run['density']:.4f}, {nonzero:,} nonzero params, "
            f"median step {median * 1000:.1f} ms, {tokens / median:,.0f} tokens/s"
        )
    projection = statistics.median(times["projection"])
    share = projection / result["sparse"]["step_seconds"]
    ratio = result["sparse"]["step_seconds"] / result["dense"]["step_seconds"]
    result |= {"projection_seconds": projection, "projection_share": share, "ratio": ratio}
    print(f"top-k projection alone: {projection * 1000:.1f} ms, {share:.0%} of a sparse step")
    print(f"sparse step time / dense step time = {ratio:.3f} (goal <= 1.15)")
    if args.json:
        print(json.dumps(result))


def timed(work: Callable[[], None], device: torch.device) -> float:
    """Seconds of `work`, waiting for a GPU to finish it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
