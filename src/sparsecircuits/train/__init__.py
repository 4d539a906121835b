"""Training: weight-sparse (or dense) GPTs.

Owns the training loop, schedules, the top-k weight projection, presets, run summaries and
export. Imports `sparsecircuits.model`, `sparsecircuits.data`, `sparsecircuits.loading`
(checkpoints are written and read there), `sparsecircuits.tasks` (task scores logged while
training) and the leaf modules `errors`, `files` and `validation` only.
"""

from sparsecircuits.train.config import PRESETS, preset_configs, steps_for_tokens
from sparsecircuits.train.trainer import TrainResult, train
from sparsecircuits.train.weight_sparsity import density_report, project_to_density, topk_mask

__all__ = [
    "PRESETS",
    "TrainResult",
    "density_report",
    "preset_configs",
    "project_to_density",
    "steps_for_tokens",
    "topk_mask",
    "train",
]
