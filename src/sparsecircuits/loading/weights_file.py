"""Model weights on disk: safetensors, with mostly-zero tensors stored as (indices, values).

A weight-sparse model keeps a few percent of its weights, so a dense file would be mostly
zeros: a 1/16-density model shrinks about 8x when only the nonzeros are written. Packing is
lossless and chosen per tensor, so dense models and half-trained checkpoints are unchanged.
Plain safetensors files (no packing metadata) load as they are.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Json, NonNegativeInt
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from sparsecircuits.errors import UserError
from sparsecircuits.validation import field_error, validate

PACKED_FORMAT = "sparsecircuits.packed/1"
# Packing (int32 index + value per nonzero) pays off below half the entries nonzero.
PACK_BELOW_DENSITY = 0.5


def save_weights(weights: dict[str, torch.Tensor], path: Path) -> None:
    """Write `weights` to `path`, packing the tensors that are mostly zero."""
    tensors: dict[str, torch.Tensor] = {}
    shapes: dict[str, list[int]] = {}
    for name, tensor in weights.items():
        tensor = tensor.detach().cpu().contiguous()
        flat = tensor.reshape(-1)
        nonzero = flat.nonzero().squeeze(1)
        if tensor.is_floating_point() and nonzero.numel() < PACK_BELOW_DENSITY * flat.numel():
            tensors[f"{name}.indices"] = nonzero.to(torch.int32)
            tensors[f"{name}.values"] = flat[nonzero]
            shapes[name] = list(tensor.shape)
        else:
            tensors[name] = tensor
    metadata = {"format": PACKED_FORMAT, "packed": json.dumps(shapes)} if shapes else None
    save_file(tensors, path, metadata=metadata)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a weights file written by `save_weights` (or any plain safetensors file)."""
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            stored = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except FileNotFoundError:
        raise UserError(f"no such checkpoint file: {path}") from None
    except (SafetensorError, OSError, ValueError) as error:
        raise UserError(f"corrupt checkpoint file {path}: {error}") from None
    if metadata.get("format") != PACKED_FORMAT:
        return stored
    shapes = validate(PackedMetadata, metadata, path).packed
    parts = {f"{name}.{part}" for name in shapes for part in ("indices", "values")}
    weights = {name: tensor for name, tensor in stored.items() if name not in parts}
    for name, shape in shapes.items():
        weights[name] = unpack(stored, name, shape, path)
    return weights


class PackedMetadata(BaseModel):
    """The metadata of a packed file: the full shape of each tensor stored as its nonzeros."""

    model_config = ConfigDict(extra="allow")
    packed: Json[dict[str, list[NonNegativeInt]]]


def unpack(
    stored: dict[str, torch.Tensor], name: str, shape: list[int], path: Path
) -> torch.Tensor:
    """The dense tensor `name` from its stored indices and values."""
    for part in ("indices", "values"):
        if f"{name}.{part}" not in stored:
            raise field_error(path, f"{name}.{part}", "missing (the metadata lists it as packed)")
    indices = stored[f"{name}.indices"].long()
    values = stored[f"{name}.values"]
    if indices.numel() and int(indices.min()) < 0:  # torch would count these from the end
        raise field_error(path, f"{name}.indices", "corrupt packed tensor: a negative index")
    try:
        dense = torch.zeros(math.prod(shape), dtype=values.dtype)
        dense[indices] = values
    except (IndexError, RuntimeError) as error:
        first_line = str(error).splitlines()[0]
        raise field_error(path, name, f"corrupt packed tensor: {first_line}") from None
    return dense.reshape(shape)
