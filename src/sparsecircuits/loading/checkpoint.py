"""Checkpoints on disk, and the one function that loads any of them back.

A run directory holds `checkpoints/step-NNNNNN/` folders and a `LATEST` file naming the newest
complete one. Each checkpoint folder is self-contained: `config.json`, `model.safetensors`,
`tokenizer.json`, and, for resuming, `optimizer.safetensors` + `trainer_state.json`. No pickle
anywhere. A checkpoint is written under a temporary name and renamed into place, then LATEST is
replaced atomically, so a kill at any moment leaves the previous checkpoint as the latest.
Reading checks every file against its schema (the JSON files' are below) and the weights and
optimizer tensors against the model, so a damaged checkpoint is one line naming file and field.
"""

from __future__ import annotations

import functools
import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from pydantic import BaseModel, ConfigDict, NonNegativeInt
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sparsecircuits.data import CodeTokenizer
from sparsecircuits.errors import UserError
from sparsecircuits.files import atomic_folder, write_json_atomic, write_text_atomic
from sparsecircuits.loading.train_config import TrainConfig
from sparsecircuits.loading.weights_file import load_weights, save_weights
from sparsecircuits.model import GPT, GPTConfig
from sparsecircuits.validation import field_error, load_json, shown

LATEST = "LATEST"
CHECKPOINTS = "checkpoints"
CHECKPOINT_NAME = re.compile(r"step-[0-9]+")  # what save_checkpoint names them
LONGEST_LATEST = 64  # bytes: a checkpoint name and its newline, with room to spare

T = TypeVar("T")


# The schemas of a checkpoint's JSON files. Keys they do not name are kept as they are: a newer
# version may add some, and the files must still load.
class DataSection(BaseModel):
    """config.json "data": what the run was trained on."""

    model_config = ConfigDict(extra="allow")
    description: str = ""
    train_tokens: NonNegativeInt | None = None
    val_tokens: NonNegativeInt | None = None
    skipped_files: NonNegativeInt = 0
    fingerprint: str | None = None  # of corpus and tokenizer; absent in older runs


class RunConfigFile(BaseModel):
    """config.json: the model's shape, the training settings and the data."""

    model_config = ConfigDict(extra="allow")
    model: GPTConfig
    train: TrainConfig
    data: DataSection = DataSection()
    source: dict | None = None  # where an imported model came from (sparsecircuits import)


class TrainerState(BaseModel):
    """trainer_state.json: where training stood when the checkpoint was written."""

    model_config = ConfigDict(extra="allow")
    step: NonNegativeInt
    tokens: NonNegativeInt = 0
    train_loss: float | None = None
    val_loss: float | None = None  # None until the first evaluation
    density: float | None = None


class ParamGroup(BaseModel):
    """One AdamW parameter group; its flags (amsgrad, foreach, ...) pass through unchecked."""

    model_config = ConfigDict(extra="allow")
    params: list[NonNegativeInt]
    lr: float
    betas: tuple[float, float]
    eps: float
    weight_decay: float


class OptimizerIndex(BaseModel):
    """optimizer.json: the optimizer state that is not tensors ("PARAMETER.SLOT" -> number)."""

    param_groups: list[ParamGroup]
    scalars: dict[str, float]


CHECKPOINT_JSON: dict[str, type[BaseModel]] = {
    "config.json": RunConfigFile,
    "trainer_state.json": TrainerState,
    "optimizer.json": OptimizerIndex,
}


@dataclass
class Run:
    """A loaded checkpoint: everything later stages need."""

    model: GPT
    # None for a model imported without its tokenizer files: it runs on token ids only.
    tokenizer_or_none: CodeTokenizer | None
    config: dict  # the whole config.json: "model", "train", "data" (and "source" if imported)
    state: dict  # trainer_state.json: step, tokens, val_loss, ...
    path: Path  # the checkpoint folder
    # Modules spliced into the model's forward pass (SAEs), as (label, weights hash): they
    # change what the model's units are, so they are part of its identity.
    spliced: tuple[tuple[str, str], ...] = ()

    @property
    def model_config(self) -> GPTConfig:
        return self.model.config

    @functools.cached_property
    def weights_sha256(self) -> str:
        """16 hex digits of a hash of the weights themselves: a re-saved or exported copy of
        the same model matches, another model does not."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        for label, sha256 in self.spliced:
            digest.update(f"spliced {label} {sha256}".encode())
        return digest.hexdigest()[:16]

    @property
    def tokenizer(self) -> CodeTokenizer:
        """The run's tokenizer; a UserError that says why for a run that has none."""
        if self.tokenizer_or_none is None:
            raise UserError(
                f"{self.path} has no tokenizer (it was imported without tokenizer files), so "
                "it cannot read or show text; import it again with its tokenizer"
            )
        return self.tokenizer_or_none


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
    """The checkpoint LATEST names (None if the run has no LATEST yet).

    LATEST is only ever written whole by `save_checkpoint`, so anything but one checkpoint
    name (bytes, an empty file, a path with / or ..) is damage: a UserError naming the file
    instead of a guess at which checkpoint was meant.
    """
    pointer = Path(run_dir) / LATEST
    if not pointer.exists() and not pointer.is_symlink():
        return None
    try:
        with open(pointer, "rb") as handle:
            data = handle.read(LONGEST_LATEST + 1)
    except OSError as error:
        raise UserError(f"cannot read {pointer}: {error.strerror or error}") from None
    name = data.decode("utf-8", errors="replace").strip()
    if len(data) > LONGEST_LATEST or not CHECKPOINT_NAME.fullmatch(name):
        raise field_error(
            pointer,
            "",
            f"expected the name of a checkpoint in {CHECKPOINTS}/ (like step-0001000), "
            f"got {shown(data)}; write the newest complete one's name into it",
        )
    return name


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder for a run directory (its LATEST) or a checkpoint folder itself."""
    path = Path(path)
    if (path / "model.safetensors").is_file():
        return path
    name = latest_name(path) if path.is_dir() else None
    if name is not None:
        folder = path / CHECKPOINTS / name
        if not (folder / "model.safetensors").is_file():
            raise field_error(
                path / LATEST, "", f"names {name}, but {folder} holds no model.safetensors"
            )
        return folder
    if not path.exists():
        raise UserError(f"no such run or checkpoint: {path}")
    raise missing_latest(path) or UserError(
        f"{path} holds no complete checkpoint (no model.safetensors, no LATEST)"
    )


def missing_latest(run_dir: Path) -> UserError | None:
    """The error for a run folder that holds checkpoints but no LATEST; None if it has none."""
    saved = sorted(path.name for path in (Path(run_dir) / CHECKPOINTS).glob("step-*"))
    if not saved:
        return None
    return UserError(
        f"{run_dir} holds checkpoints but no {LATEST} pointer; restore it: write the name of "
        f"the newest ({saved[-1]}) into {Path(run_dir) / LATEST}"
    )


def load_run(path: str | Path, device: str = "cpu") -> Run:
    """Load a trained model, its tokenizer and its configs from a run or checkpoint folder.

    Every file is checked before it is used: a damaged one is a UserError that names the file
    and the field, never a traceback from deep inside torch.
    """
    device = usable_device(device)
    folder = resolve_checkpoint(path)
    config = read_checkpoint_json(folder / "config.json", RunConfigFile)
    model = GPT(config.model)
    load_weights_into(model, folder / "model.safetensors")
    state_file = folder / "trainer_state.json"
    state = read_json(state_file) if state_file.is_file() else {}
    tokenizer_file = folder / "tokenizer.json"
    tokenizer = None
    if tokenizer_file.exists() or not config.model_dump(exclude_unset=True).get("source"):
        tokenizer = CodeTokenizer.from_file(tokenizer_file)
    if tokenizer is not None and tokenizer.vocab_size > config.model.vocab_size:
        raise field_error(
            tokenizer_file,
            "",
            f"its {tokenizer.vocab_size:,} tokens do not fit the model "
            f"(model.vocab_size {config.model.vocab_size:,} in config.json)",
        )
    config_data = config.model_dump(exclude_unset=True)  # the file's own keys, checked
    return Run(model.to(device).eval(), tokenizer, config_data, state, folder)


def usable_device(name: str) -> str:
    """`name` if this machine has it (cpu, cuda, cuda:N), else a UserError saying why."""
    kind, _, number = name.partition(":")
    if kind not in ("cpu", "cuda") or (number and (kind == "cpu" or not number.isdigit())):
        raise UserError(f"unknown device {name!r} (use cpu, cuda or cuda:N)")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} was asked for but no CUDA GPU is available")
    if number and int(number) >= torch.cuda.device_count():
        raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} GPUs")
    return name


def load_weights_into(model: GPT, path: Path) -> None:
    """Fill `model` from a weights file, refusing one written for another shape of model."""
    weights = load_weights(path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise UserError(
            f"{path} does not match its config.json "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for name, tensor in weights.items():
        if tensor.shape != expected[name].shape:
            raise field_error(
                path,
                name,
                f"shape {list(tensor.shape)}, but config.json makes it "
                f"{list(expected[name].shape)}",
            )
    model.load_state_dict(weights)


def load_optimizer_state(folder: Path, optimizer: torch.optim.Optimizer) -> None:
    """Restore `optimizer` for --resume, refusing a state that does not fit its parameters."""
    read_json(folder / "trainer_state.json")  # resuming also needs the step it stopped at
    index = read_checkpoint_json(folder / "optimizer.json", OptimizerIndex)
    tensors = read_safetensors(folder / "optimizer.safetensors")
    check_optimizer_state(index, tensors, optimizer, folder)
    optimizer.load_state_dict(unflatten_optimizer_state(tensors, index.model_dump()))


def read_checkpoint_json(path: Path, schema: type[T]) -> T:
    return load_json(path, schema, "checkpoint file")


def read_json(path: Path) -> dict:
    """A checkpoint's JSON file as plain data, checked against its schema (by its name)."""
    # Only the keys the file holds (a dataclass section comes back whole, defaults filled in).
    return read_checkpoint_json(path, CHECKPOINT_JSON[path.name]).model_dump(exclude_unset=True)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except FileNotFoundError:
        raise UserError(f"no such checkpoint file: {path}") from None
    except (SafetensorError, OSError, ValueError) as error:
        raise UserError(f"corrupt checkpoint file {path}: {error}") from None


def check_optimizer_state(
    index: OptimizerIndex,
    tensors: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    folder: Path,
) -> None:
    """Every saved slot belongs to a parameter of `optimizer` and has that parameter's shape.

    torch checks only the group sizes: a tensor of another shape would load without a word and
    fail at the first step, a parameter missing a slot would fail there with a KeyError.
    """
    index_file, tensors_file = folder / "optimizer.json", folder / "optimizer.safetensors"
    saved_sizes = [len(group.params) for group in index.param_groups]
    sizes = [len(group["params"]) for group in optimizer.param_groups]
    if saved_sizes != sizes:
        raise field_error(
            index_file,
            "param_groups",
            f"groups of {saved_sizes} parameters, but the model's optimizer has {sizes}",
        )
    # load_state_dict pairs the saved parameter numbers with the parameters, in order.
    parameters = {
        number: parameter
        for saved, group in zip(index.param_groups, optimizer.param_groups, strict=True)
        for number, parameter in zip(saved.params, group["params"], strict=True)
    }
    slots: dict[int, set[str]] = {}
    named = [(tensors_file, key, key) for key in tensors]
    named += [(index_file, f"scalars[{key!r}]", key) for key in index.scalars]
    for source, location, key in named:
        number, _, slot = key.partition(".")
        if not number.isdigit() or not slot:
            raise field_error(source, location, "expected a name like 0.exp_avg (PARAMETER.SLOT)")
        if int(number) not in parameters:
            raise field_error(source, location, f"optimizer.json has no parameter {number}")
        slots.setdefault(int(number), set()).add(slot)
    for key, tensor in tensors.items():
        number, _, slot = key.partition(".")
        shape = list(parameters[int(number)].shape)
        if slot == "step" and tensor.numel() != 1:
            raise field_error(tensors_file, key, f"shape {list(tensor.shape)}, expected a number")
        if slot != "step" and list(tensor.shape) != shape:
            raise field_error(
                tensors_file, key, f"shape {list(tensor.shape)}, but its parameter is {shape}"
            )
    reference = next(iter(slots.values()), set())
    for number, held in sorted(slots.items()):
        if held != reference:
            raise field_error(
                tensors_file,
                f"{number}.*",
                f"parameter {number} has slots {sorted(held)}, others {sorted(reference)}",
            )


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
