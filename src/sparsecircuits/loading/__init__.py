"""Loading: one way in for everything saved, below `tasks` and `train`.

Owns the on-disk formats of a run (checkpoint folders, packed safetensors weights, the
config.json sections and their schemas), `load_run` (also `sparsecircuits.load`), which
returns any run folder or checkpoint as a `Run` (`.model`, `.tokenizer`, `.config`), the
activation stream every analysis reads (activations.py) and the estimate of the memory a
model's forward pass or training needs, checked before allocating (memory.py). Imports
`sparsecircuits.data`, `sparsecircuits.model` and the leaf modules only, so `tasks`, `train`
and every later stage can load runs without importing each other.
"""

from sparsecircuits.loading.checkpoint import (
    Run,
    load_run,
    resolve_checkpoint,
    save_checkpoint,
    usable_device,
)
from sparsecircuits.loading.train_config import TrainConfig

__all__ = [
    "Run",
    "TrainConfig",
    "load_run",
    "resolve_checkpoint",
    "save_checkpoint",
    "usable_device",
]
