"""The SAELens side of sae_throughput.py, run in its own venv (benchmarks/.venv-saelens, made
by benchmarks/envs/setup_sae_lens.sh); it never imports sparsecircuits.

    benchmarks/.venv-saelens/bin/python benchmarks/sae_worker.py ACTS D_SAE K BATCH STEPS

Trains SAELens' TopKTrainingSAE with Adam on the activations in ACTS (safetensors, "acts"),
BATCH at a time, and prints {"acts_per_s", "peak_mb", "version"} as JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from importlib.metadata import version

import torch
from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.saes.sae import TrainStepInput
from safetensors.torch import load_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("acts", "d_sae", "k", "batch", "steps"):
        parser.add_argument(name)
    args = parser.parse_args()
    acts = load_file(args.acts)["acts"]
    d_sae, k, batch, steps = int(args.d_sae), int(args.k), int(args.batch), int(args.steps)
    torch.manual_seed(0)
    config = TopKTrainingSAEConfig(
        d_in=acts.shape[1], d_sae=d_sae, k=k, dtype="float32", device="cpu"
    )
    sae = TopKTrainingSAE(config)
    optimizer = torch.optim.Adam(sae.parameters(), lr=4e-4)
    dead = torch.zeros(d_sae, dtype=torch.bool)

    def step(index: int) -> None:
        rows = acts[(index * batch) % len(acts) :][:batch]
        step_input = TrainStepInput(
            sae_in=rows,
            coefficients={},
            dead_neuron_mask=dead,
            n_training_steps=index,
            is_logging_step=False,
        )
        output = sae.training_forward_pass(step_input)
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        optimizer.step()

    for index in range(2):  # warm-up
        step(index)
    started = time.perf_counter()
    for index in range(steps):
        step(index)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"acts_per_s": steps * batch / seconds, "peak_mb": peak, "version": version("sae_lens")}
        )
    )


if __name__ == "__main__":
    main()
