"""The named presets that fill in a training run, and the checks a run's configs must pass
before any work: known eval tasks, and a model and batch that fit the device."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

from sparsecircuits.errors import UserError
from sparsecircuits.loading import TrainConfig
from sparsecircuits.loading.memory import parameter_count, require_memory, training_bytes
from sparsecircuits.model import GPTConfig
from sparsecircuits.tasks import get_task


@dataclass(frozen=True)
class Preset:
    description: str
    model: GPTConfig
    train: TrainConfig


PRESETS = {
    "tiny": Preset(
        "tests and smoke runs: seconds on a CPU",
        GPTConfig(n_layer=2, d_model=32, n_ctx=64, vocab_size=512),
        TrainConfig(
            vocab_size=512,
            batch_size=8,
            steps=80,
            eval_every=40,
            eval_tokens=4096,
            checkpoint_every=40,
            lr=1e-2,
        ),
    ),
    "small": Preset(
        "4 layers, d_model 128, ctx 256: simple Python tasks after 15-30 minutes on 2 cores",
        GPTConfig(n_layer=4, d_model=128, n_ctx=256),
        TrainConfig(batch_size=32, steps=2000, lr=3e-3),
    ),
    "paper": Preset(
        "the paper's smallest: 8 layers, d_model 256, ctx 256; meant for a GPU",
        GPTConfig(n_layer=8, d_model=256, n_ctx=256),
        TrainConfig(
            batch_size=64,
            steps=20000,
            lr=3e-3,
            eval_every=1000,
            checkpoint_every=1000,
            device="cuda",
        ),
    ),
}


def preset_configs(name: str) -> tuple[GPTConfig, TrainConfig]:
    """Fresh copies of a preset's model and training configs."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
    preset = PRESETS[name]
    return replace(preset.model), replace(preset.train, preset=name)


def steps_for_tokens(tokens: int, batch_size: int, n_ctx: int) -> int:
    return max(1, math.ceil(tokens / (batch_size * n_ctx)))


def check_eval_tasks(config: TrainConfig) -> None:
    """An unknown eval task name fails now, not after the corpus is tokenised."""
    for name in config.eval_task_names:
        get_task(name)


def check_training_memory(model: GPTConfig, train: TrainConfig) -> None:
    """A model or batch too big for the training device fails now, before the corpus is read
    or the run folder made, in one line that names the flags setting the size."""
    # The model's vocabulary is the tokenizer's, trained later: at most --vocab-size tokens.
    model = replace(model, vocab_size=max(model.vocab_size, train.vocab_size))
    # Under torchrun each process holds a share of the batch on its own device.
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    batch = max(1, train.batch_size // max(1, world_size))
    device = train.device
    if device == "cuda":
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    sizes = (
        f"--n-layer {model.n_layer}, --d-model {model.d_model}, --n-ctx {model.n_ctx}, "
        f"--vocab-size {model.vocab_size}, --batch-size {train.batch_size}"
    )
    what = f"training {parameter_count(model):,} parameters on {batch:,} windows a step ({sizes})"
    require_memory(training_bytes(model, batch), what, device)
