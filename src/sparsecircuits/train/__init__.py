"""Training: weight-sparse (or dense) GPTs, checkpoints, and loading them back.

Owns the training loop, schedules, the top-k weight projection, checkpoints and presets.
Imports `sparsecircuits.model`, `sparsecircuits.data`, `sparsecircuits.tasks` (task scores
logged while training) and the leaf modules `errors`, `files` (atomic writes, run-folder
claims) and `validation` (schemas of the files it reads) only;
everything downstream loads a trained model through `load_run`.
"""

from sparsecircuits.train.checkpoint import (
    Run,
    load_run,
    resolve_checkpoint,
    save_checkpoint,
    usable_device,
)
from sparsecircuits.train.config import PRESETS, TrainConfig, preset_configs, steps_for_tokens
from sparsecircuits.train.trainer import TrainResult, train
from sparsecircuits.train.weight_sparsity import density_report, project_to_density, topk_mask

__all__ = [
    "PRESETS",
    "Run",
    "TrainConfig",
    "TrainResult",
    "density_report",
    "load_run",
    "preset_configs",
    "project_to_density",
    "resolve_checkpoint",
    "save_checkpoint",
    "usable_device",
    "steps_for_tokens",
    "topk_mask",
    "train",
]
