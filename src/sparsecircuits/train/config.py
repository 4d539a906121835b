"""What a training run does, and the named presets that fill it in."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from sparsecircuits.errors import UserError
from sparsecircuits.model import GPTConfig
from sparsecircuits.tasks import get_task
from sparsecircuits.validation import validate


@dataclass
class TrainConfig:
    preset: str = "custom"
    data: str = "stdlib"
    data_glob: str = "**/*.py"
    vocab_size: int = 2048
    seed: int = 0
    batch_size: int = 32
    steps: int = 1000
    lr: float = 3e-3
    density: float = 1 / 16  # kept fraction of every sparsified tensor at the end of annealing
    anneal_end: float = 0.5  # fraction of training over which the kept fraction reaches it
    # Kept fraction of embeddings, unembedding and biases; None: the same as `density`.
    embedding_density: float | None = None
    min_per_neuron: int = 4
    warmup_frac: float = 0.01
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 0.1  # the paper's unusually large eps, on purpose
    grad_rms: float = 1.0  # gradients are rescaled to this RMS before every step
    eval_every: int = 200
    eval_tokens: int = 65536
    eval_tasks: str = ""  # comma-separated tasks whose test loss and accuracy each eval logs
    checkpoint_every: int = 200
    device: str = "cpu"

    def __post_init__(self) -> None:
        for flag, value in (
            ("density", self.density),
            ("embedding density", self.embedding_density),
        ):
            if value is not None and not 0 < value <= 1:
                raise UserError(f"{flag} must be in (0, 1], got {value}")
        for name in ("steps", "batch_size", "eval_every", "eval_tokens", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        # The same ranges as the CLI flags, for configs built in Python or read from a file.
        for name, low, high in (
            ("anneal_end", 0.0, 1.0),
            ("warmup_frac", 0.0, 1.0),
            ("beta1", 0.0, 1.0),
            ("beta2", 0.0, 1.0),
            ("weight_decay", 0.0, math.inf),
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and low <= value <= high):
                raise UserError(f"{name} must be in [{low:g}, {high:g}], got {value}")
        for name in ("lr", "adam_eps", "grad_rms"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise UserError(f"{name} must be a positive number, got {value}")
        if self.seed < 0:
            raise UserError(f"seed must be at least 0, got {self.seed}")
        for name in self.eval_task_names:
            get_task(name)  # an unknown name fails now, not after the corpus is tokenised

    @property
    def eval_task_names(self) -> list[str]:
        return [name for name in (part.strip() for part in self.eval_tasks.split(",")) if name]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str | Path = "training config") -> TrainConfig:
        """The config in `data`, checked field by field; `source` names it in errors. Keys this
        version does not know are ignored, so a config written by a newer one still loads."""
        return validate(cls, data, source)


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
