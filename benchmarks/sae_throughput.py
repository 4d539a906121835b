"""SAE training throughput: ours against SAELens, side by side in one run.

Both train a TopK SAE with Adam on the same random activations (saved once, read by both),
with the same shape (default d_in 512, d_sae 4096, k 32, batch 4096), each in its own process
so that peak memory (max resident set) is each side's own. SAELens runs in its own venv
(benchmarks/.venv-saelens, made once by benchmarks/envs/setup_sae_lens.sh).

    .venv/bin/python benchmarks/sae_throughput.py [--steps 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

HERE = Path(__file__).parent
SAELENS_PYTHON = HERE / ".venv-saelens" / "bin" / "python"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-in", type=int, default=512)
    parser.add_argument("--d-sae", type=int, default=4096)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per side")
    parser.add_argument("--ours-only", action="store_true", help="no SAELens side")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # our side, in its own process
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(train_ours(Path(args.worker), args)))
        return
    with tempfile.TemporaryDirectory() as folder:
        acts_file = Path(folder) / "acts.safetensors"
        generator = torch.Generator().manual_seed(0)
        save_file({"acts": torch.randn(4 * args.batch, args.d_in, generator=generator)}, acts_file)
        shape = [str(value) for value in (args.d_sae, args.k, args.batch, args.steps)]
        options = ["--d-in", str(args.d_in), "--d-sae", shape[0], "--k", shape[1]]
        options += ["--batch", shape[2], "--steps", shape[3]]
        ours = run_side([sys.executable, __file__, "--worker", str(acts_file), *options])
        theirs = None
        if not args.ours_only:
            if not SAELENS_PYTHON.exists():
                raise SystemExit(
                    f"error: no {SAELENS_PYTHON}: run benchmarks/envs/setup_sae_lens.sh"
                )
            theirs = run_side(
                [str(SAELENS_PYTHON), str(HERE / "sae_worker.py"), str(acts_file), *shape]
            )
    result = {
        "shape": {"d_in": args.d_in, "d_sae": args.d_sae, "k": args.k, "batch": args.batch},
        "threads": torch.get_num_threads(),
        "ours_acts_per_s": ours["acts_per_s"],
        "ours_peak_mb": ours["peak_mb"],
    }
    print(f"ours:    {ours['acts_per_s']:,.0f} activations/s, peak {ours['peak_mb']:,.0f} MB")
    if theirs is not None:
        ratio = ours["acts_per_s"] / theirs["acts_per_s"]
        result |= {
            "saelens_version": theirs["version"],
            "saelens_acts_per_s": theirs["acts_per_s"],
            "saelens_peak_mb": theirs["peak_mb"],
            "ratio": ratio,
        }
        print(
            f"SAELens {theirs['version']}: {theirs['acts_per_s']:,.0f} activations/s, peak "
            f"{theirs['peak_mb']:,.0f} MB\nratio (ours / SAELens): {ratio:.2f}"
        )
    if args.json:
        print(json.dumps(result))


def run_side(command: list[str]) -> dict:
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        raise SystemExit(f"error: {command[1]} failed: {finished.stderr.strip().splitlines()[-1:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def train_ours(acts_file: Path, args: argparse.Namespace) -> dict:
    from sparsecircuits.sae import SAEConfig, build_sae

    acts = load_file(acts_file)["acts"]
    torch.manual_seed(0)
    config = SAEConfig(arch="topk", d_in=args.d_in, d_sae=args.d_sae, k=args.k, hook="h")
    sae = build_sae(config)
    optimizer = torch.optim.Adam(sae.parameters(), lr=4e-4)

    def step(index: int) -> None:
        rows = acts[(index * args.batch) % len(acts) :][: args.batch]
        loss = sae.losses(rows, rows)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sae.normalise_decoder()

    for index in range(2):  # warm-up
        step(index)
    started = time.perf_counter()
    for index in range(args.steps):
        step(index)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"acts_per_s": args.steps * args.batch / seconds, "peak_mb": peak}


if __name__ == "__main__":
    main()
