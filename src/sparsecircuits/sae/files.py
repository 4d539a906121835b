"""An SAE on disk: config.json (its SAEConfig) beside sae.safetensors, written whole or not
at all; loading checks both and refuses an SAE trained on another model unless forced."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sparsecircuits.errors import UserError
from sparsecircuits.files import atomic_folder, write_json_atomic
from sparsecircuits.sae.architectures import build_sae
from sparsecircuits.sae.base import SparseAutoencoder
from sparsecircuits.sae.config import SAEConfig
from sparsecircuits.validation import load_json

CONFIG = "config.json"
WEIGHTS = "sae.safetensors"


def save_sae(sae: SparseAutoencoder, folder: Path) -> Path:
    """A new folder holding the SAE (refused where something is already)."""
    with atomic_folder(Path(folder)) as staging:
        write_sae_files(sae, staging)
    return Path(folder)


def write_sae_files(sae: SparseAutoencoder, folder: Path) -> None:
    write_json_atomic(folder / CONFIG, sae.config.to_dict())
    save_file(sae_tensors(sae), folder / WEIGHTS)


def sae_tensors(sae: SparseAutoencoder) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu().contiguous() for name, tensor in sae.state_dict().items()}


def load_sae(
    folder: Path, model_sha256: str | None = None, force: bool = False
) -> SparseAutoencoder:
    """The SAE in `folder`; with `model_sha256`, refused if trained on another model (a warning
    instead with `force`)."""
    folder = Path(folder)
    if not (folder / CONFIG).is_file():
        raise UserError(f"{folder} is not an SAE folder (no {CONFIG})")
    config = SAEConfig.from_dict(load_json(folder / CONFIG, dict, "SAE config"))
    sae = build_sae(config)
    try:
        state = load_file(folder / WEIGHTS)
    except (OSError, SafetensorError) as error:
        raise UserError(f"{folder / WEIGHTS}: not readable safetensors ({error})") from None
    expected = {name: tuple(tensor.shape) for name, tensor in sae.state_dict().items()}
    found = {name: tuple(tensor.shape) for name, tensor in state.items()}
    if found != expected:
        raise UserError(f"{folder / WEIGHTS}: tensors {found} do not match its config {expected}")
    sae.load_state_dict({name: tensor.to(torch.float32) for name, tensor in state.items()})
    if model_sha256 is not None and config.model_sha256 and config.model_sha256 != model_sha256:
        message = f"{folder} was trained on another model ({config.model_path or 'unknown'})"
        if not force:
            raise UserError(message + "; pass --force to use it anyway")
        print(f"warning: {message}", file=sys.stderr)
    return sae
