"""What a training run does: the `train` section of every saved config.json.

It lives here, below `tasks` and `train`, because loading any saved run checks it; which
eval task names exist is checked by `train` (train.config.check_eval_tasks), which knows the
suite.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from sparsecircuits.errors import UserError
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
