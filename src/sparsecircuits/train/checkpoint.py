"""Checkpoints on disk, and the one function that loads any of them back.

A run directory holds `checkpoints/step-NNNNNN/` folders and a `LATEST` file naming the newest
complete one. Each checkpoint folder is self-contained: `config.json`, `model.safetensors`,
`tokenizer.json`, and, for resuming, `optimizer.safetensors` + `trainer_state.json`. No pickle
anywhere. A checkpoint is written under a temporary name and renamed into place, then LATEST is
replaced atomically, so a kill at any moment leaves the previous checkpoint as the latest.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sparsecircuits.data import CodeTokenizer
from sparsecircuits.errors import UserError
from sparsecircuits.files import atomic_folder, write_json_atomic, write_text_atomic
from sparsecircuits.model import GPT, GPTConfig
from sparsecircuits.train.weights_file import load_weights, save_weights

LATEST = "LATEST"
CHECKPOINTS = "checkpoints"


@dataclass
class Run:
    """A loaded checkpoint: everything later stages need."""

    model: GPT
    tokenizer: CodeTokenizer
    config: dict  # the whole config.json: "model", "train", "data"
    state: dict  # trainer_state.json: step, tokens, val_loss, ...
    path: Path  # the checkpoint folder

    @property
    def model_config(self) -> GPTConfig:
        return self.model.config


def save_checkpoint(
    run_dir: Path,
    model: GPT,
    tokenizer: CodeTokenizer,
    config: dict,
    state: dict,
    optimizer: torch.optim.Optimizer | None = None,
    keep: int = 2,
) -> Path:
    """Write a complete checkpoint for `state["step"]` and point LATEST at it."""
    checkpoints = run_dir / CHECKPOINTS
    checkpoints.mkdir(parents=True, exist_ok=True)
    name = f"step-{state['step']:07d}"
    final = checkpoints / name
    if final.exists() and latest_name(run_dir) == name:
        return final  # this exact step is already the complete latest checkpoint
    shutil.rmtree(final, ignore_errors=True)  # an incomplete one: LATEST never named it
    with atomic_folder(final) as staging:
        save_weights(model.state_dict(), staging / "model.safetensors")
        tokenizer.save(staging / "tokenizer.json")
        write_json_atomic(staging / "config.json", config)
        write_json_atomic(staging / "trainer_state.json", state)
        if optimizer is not None:
            tensors, layout = flatten_optimizer_state(optimizer)
            save_file(tensors, staging / "optimizer.safetensors")
            write_json_atomic(staging / "optimizer.json", layout)
    write_text_atomic(run_dir / LATEST, name + "\n")
    for old in sorted(checkpoints.glob("step-*"))[:-keep]:
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_name(run_dir: Path) -> str | None:
    pointer = run_dir / LATEST
    return pointer.read_text().strip() if pointer.is_file() else None


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder for a run directory (its LATEST) or a checkpoint folder itself."""
    path = Path(path)
    if (path / "model.safetensors").is_file():
        return path
    name = latest_name(path)
    if name is not None and (path / CHECKPOINTS / name / "model.safetensors").is_file():
        return path / CHECKPOINTS / name
    if not path.exists():
        raise UserError(f"no such run or checkpoint: {path}")
    raise UserError(f"{path} holds no complete checkpoint (no model.safetensors, no valid LATEST)")


def load_run(path: str | Path, device: str = "cpu") -> Run:
    """Load a trained model, its tokenizer and its configs from a run or checkpoint folder."""
    folder = resolve_checkpoint(path)
    config = read_json(folder / "config.json")
    model = GPT(GPTConfig.from_dict(config["model"]))
    weights = load_weights(folder / "model.safetensors")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise UserError(
            f"checkpoint {folder} does not match its config.json "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    state_file = folder / "trainer_state.json"
    state = read_json(state_file) if state_file.is_file() else {}
    tokenizer = CodeTokenizer.from_file(folder / "tokenizer.json")
    return Run(model.to(device).eval(), tokenizer, config, state, folder)


def load_optimizer_state(folder: Path, optimizer: torch.optim.Optimizer) -> None:
    layout = read_json(folder / "optimizer.json")
    tensors = read_safetensors(folder / "optimizer.safetensors")
    optimizer.load_state_dict(unflatten_optimizer_state(tensors, layout))


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"checkpoint file missing: {path}") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"corrupt checkpoint file {path}: {error}") from None


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except FileNotFoundError:
        raise UserError(f"checkpoint file missing: {path}") from None
    except (SafetensorError, OSError, ValueError) as error:
        raise UserError(f"corrupt checkpoint file {path}: {error}") from None


def flatten_optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON-able rest."""
    state_dict = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, slots in state_dict["state"].items():
        for slot, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{slot}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{slot}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], layout: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in [*tensors.items(), *layout["scalars"].items()]:
        index, slot = key.split(".", 1)
        state.setdefault(int(index), {})[slot] = value
    groups = [
        {**group, "betas": tuple(group["betas"])} if "betas" in group else group
        for group in layout["param_groups"]
    ]
    return {"state": state, "param_groups": groups}
