"""Who may write a training run folder: the run's identity and the claim on its folder.

A training command writes only into a new (or empty) folder, or into a folder that already holds
this same run (same model and training config, apart from what may change on --resume). It
holds the folder's lock while it trains, so a second training into the same --out stops with
one line instead of interleaving metrics and checkpoints.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from sparsecircuits.errors import UserError
from sparsecircuits.files import claim_run_folder
from sparsecircuits.loading import TrainConfig
from sparsecircuits.loading.checkpoint import latest_name, missing_latest
from sparsecircuits.model import GPTConfig

# Training fields that may differ on --resume without changing what is trained.
RESUMABLE_FIELDS = frozenset({"device", "eval_every", "eval_tasks", "checkpoint_every"})


def training_identity(model_config: GPTConfig, config: TrainConfig) -> dict:
    """What must match for a command to write into an existing run folder."""
    model = {k: v for k, v in model_config.to_dict().items() if k != "vocab_size"}
    train = {k: v for k, v in config.to_dict().items() if k not in RESUMABLE_FIELDS}
    return {"model": model, "train": train}


@contextlib.contextmanager
def claim_training_folder(
    run_dir: Path, model_config: GPTConfig, config: TrainConfig, resume: bool
) -> Iterator[Path]:
    """Hold `run_dir` for this training; refuse folders that hold anything else."""
    latest = latest_name(run_dir) if run_dir.is_dir() else None
    if not resume and latest is not None:
        raise UserError(f"{run_dir} already holds a run: pass --resume, or choose another --out")
    # Also on --resume: without LATEST the run would start again from step 0 and overwrite
    # the checkpoints and metrics it has.
    if latest is None and (error := missing_latest(run_dir)) is not None:
        raise error
    # A run written before folders were marked is adopted on --resume: its saved config was
    # already checked against the flags.
    adopt = resume and latest is not None
    with claim_run_folder(
        run_dir, "train", training_identity(model_config, config), adopt=adopt
    ) as folder:
        yield folder
