"""Activation caching throughput: every hook point of a GPT-2-small-shaped model cached by us
and by TransformerLens's `run_with_cache`, same random weights and tokens, in one run.

Also a plain forward in each library and in HF transformers, and a one-layer cache that stops
after its layer. Logits must agree with HF's to --tolerance, else the exit status is 1.
TransformerLens runs in a subprocess in its own venv (benchmarks/tl_worker.py), made once with
`bash benchmarks/envs/setup_transformer_lens.sh`; it is no dependency of ours.

    .venv/bin/python benchmarks/cache_throughput.py [--batch 4] [--seq 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.utils import logging as transformers_logging

import sparsecircuits
from sparsecircuits.imports.hf import import_hf
from timing import median_seconds  # benchmarks/timing.py, beside this script

HERE = Path(__file__).parent
TL_PYTHON = HERE / ".venv-tl" / "bin" / "python"


class Side(NamedTuple):
    """One library's median seconds per measurement, what its caches held, and its logits."""

    library: str
    seconds: dict[str, float]  # "forward", and for the hooked libraries "every" and "one"
    cached: dict[str, str]
    logits: torch.Tensor
    cache_vs_forward: float | None  # max abs logit difference of run_with_cache vs forward


def random_gpt2(seed: int) -> GPT2LMHeadModel:
    """GPT-2 small's shape with HF's own random initialisation."""
    config = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config).eval()


def hf_side(hf_model: GPT2LMHeadModel, tokens: torch.Tensor, args: argparse.Namespace) -> Side:
    """HF transformers' own forward: the reference logits, and the speed of a plain model."""

    def forward() -> torch.Tensor:
        return hf_model(tokens, use_cache=False).logits

    seconds = median_seconds({"forward": forward}, args.warmup, args.repeats)
    return Side("HF transformers", seconds, {}, forward(), None)


def transformer_lens_side(
    hf_dir: Path, tokens_file: Path, folder: Path, args: argparse.Namespace
) -> Side:
    """The worker's medians and forward logits, from its own venv and process."""
    out = folder / "tl_out.safetensors"
    options = ["--layer", args.layer, "--warmup", args.warmup, "--repeats", args.repeats]
    command = [TL_PYTHON, HERE / "tl_worker.py", hf_dir, tokens_file, out, *options]
    subprocess.run([str(part) for part in [*command, "--threads", args.threads]], check=True)
    with safe_open(out, "pt") as saved:
        results = json.loads(saved.metadata()["results"])
        logits = saved.get_tensor("logits")
    every = f"{results['every_entries']} tensors, {results['every_bytes'] / 2**20:,.0f} MiB"
    cached = {"every": every, "one": ", ".join(results["one_entries"])}
    library = f"TransformerLens {results['version']}"
    difference = results["cache_vs_forward_max_abs_diff"]
    return Side(library, results["seconds"], cached, logits, difference)


def our_side(hf_dir: Path, folder: Path, tokens: torch.Tensor, args: argparse.Namespace) -> Side:
    """The same weights through `sparsecircuits import hf` and `sparsecircuits.load`."""
    run_dir = folder / "ours"
    import_hf(hf_dir, run_dir)
    model = sparsecircuits.load(run_dir).model.eval()
    one_hook, stop = f"blocks.{args.layer}.hook_resid_post", args.layer + 1
    logits = model(tokens)
    cache_logits, cache = model.run_with_cache(tokens, names="*")
    every = f"{len(cache)} tensors, {sum(v.nbytes for v in cache.values()) / 2**20:,.0f} MiB"
    with model.cache(one_hook) as one:
        model(tokens, stop_at_layer=stop)
    difference = (cache_logits - logits).abs().max().item()
    del cache, cache_logits

    def cache_one_layer() -> None:
        with model.cache(one_hook):
            model(tokens, stop_at_layer=stop)

    def cache_one_layer_full_forward() -> None:
        with model.cache(one_hook):
            model(tokens)

    without_heads = [name for name in model.hook_names if not name.endswith("hook_result")]
    steps = {
        "forward": lambda: model(tokens),
        "every": lambda: model.run_with_cache(tokens, names=without_heads),
        "every_heads": lambda: model.run_with_cache(tokens, names="*"),
        "one": cache_one_layer,
        "one_full": cache_one_layer_full_forward,
    }
    seconds = median_seconds(steps, args.warmup, args.repeats)
    cached = {"every_heads": every, "one": ", ".join(one)}
    return Side("sparsecircuits", seconds, cached, logits, difference)


def print_report(sides: list[Side], args: argparse.Namespace) -> float:
    """The table, the ratios and the logit checks; returns the largest logit difference."""
    n_tokens = args.batch * args.seq
    whats = {
        "forward": "forward",
        "every": "run_with_cache, every hook but per-head",
        "every_heads": "run_with_cache, every hook + per-head",
        "one": f"one layer's cache, stop_at_layer={args.layer + 1}",
        "one_full": "one layer's cache, whole forward",
    }
    print(
        f"random weights of GPT-2 small's shape (12 layers, d_model 768, 12 heads, vocab 50257), "
        f"batch {args.batch} x {args.seq} tokens, CPU, {args.threads} torch threads, "
        f"median of {args.repeats} after {args.warmup} warm-up, torch {torch.__version__}"
    )
    print(f"{'library':<24}{'measured':<40}{'tokens/s':>10}{'ms':>8}  cached")
    for side in sides:
        for kind, seconds in side.seconds.items():
            numbers = f"{n_tokens / seconds:>10,.0f}{seconds * 1e3:>8,.0f}"
            row = f"{side.library:<24}{whats[kind]:<40}{numbers}  {side.cached.get(kind, '')}"
            print(row.rstrip())
    hf, tl, ours = sides
    every_ratio = tl.seconds["every_heads"] / ours.seconds["every_heads"]
    default_ratio = tl.seconds["every"] / ours.seconds["every"]
    one_ratio = ours.seconds["forward"] / ours.seconds["one"]
    one_full_ratio = ours.seconds["forward"] / ours.seconds["one_full"]
    # "Every hook" holds the same information on both sides only with per-head outputs
    # (TransformerLens' use_attn_result); without them, each library's own set.
    print(
        f"cache every hook + per-head outputs, tokens/s ours / TransformerLens: {every_ratio:.2f}"
    )
    print(f"cache every hook but per-head outputs, ours / TransformerLens: {default_ratio:.2f}")
    print(
        f"tokens/s ours, one layer's cache / plain forward: {one_ratio:.2f} stopping after it, ",
        end="",
    )
    print(f"{one_full_ratio:.2f} running the whole forward")

    differences = {
        f"{tl.library} forward vs HF": (tl.logits - hf.logits).abs().max().item(),
        f"{ours.library} forward vs HF": (ours.logits - hf.logits).abs().max().item(),
    }
    for side in (tl, ours):
        differences[f"{side.library} run_with_cache vs its forward"] = side.cache_vs_forward
    print(f"logits, max abs difference (HF's logits reach {hf.logits.abs().max().item():.2f}):")
    for what, difference in differences.items():
        print(f"  {what}: {difference:.2e}")
    return max(differences.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256, help="tokens per sequence")
    parser.add_argument("--layer", type=int, default=5, help="the one-layer cache's layer")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls; the median counts")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on both sides")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest logit difference")
    args = parser.parse_args()
    transformers_logging.disable_progress_bar()
    if not TL_PYTHON.exists():
        sys.exit(f"error: no {TL_PYTHON}: run bash {HERE / 'envs/setup_transformer_lens.sh'}")

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as name, torch.no_grad():
        folder = Path(name)
        hf_model = random_gpt2(args.seed)
        hf_dir = folder / "hf"
        hf_model.save_pretrained(hf_dir)
        generator = torch.Generator().manual_seed(args.seed)
        shape = (args.batch, args.seq)
        tokens = torch.randint(0, hf_model.config.vocab_size, shape, generator=generator)
        tokens_file = folder / "tokens.safetensors"
        save_file({"tokens": tokens}, tokens_file)
        # One library at a time: each side has the threads to itself.
        sides = [hf_side(hf_model, tokens, args)]
        del hf_model
        sides.append(transformer_lens_side(hf_dir, tokens_file, folder, args))
        sides.append(our_side(hf_dir, folder, tokens, args))
    worst = print_report(sides, args)
    if not worst <= args.tolerance:  # written so that a NaN fails too
        sys.exit(f"error: logits differ by {worst:.2e}, more than --tolerance {args.tolerance:g}")


if __name__ == "__main__":
    main()
