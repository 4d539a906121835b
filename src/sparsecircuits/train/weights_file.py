"""Model weights on disk: safetensors, with mostly-zero tensors stored as (indices, values).

A weight-sparse model keeps a few percent of its weights, so a dense file would be mostly
zeros: a 1/16-density model shrinks about 8x when only the nonzeros are written. Packing is
lossless and chosen per tensor, so dense models and half-trained checkpoints are unchanged.
Plain safetensors files (no packing metadata) load as they are.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from sparsecircuits.errors import UserError

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
        raise UserError(f"checkpoint file missing: {path}") from None
    except (SafetensorError, OSError, ValueError) as error:
        raise UserError(f"corrupt checkpoint file {path}: {error}") from None
    if metadata.get("format") != PACKED_FORMAT:
        return stored
    try:
        shapes = json.loads(metadata["packed"])
        parts = {f"{name}.{part}" for name in shapes for part in ("indices", "values")}
        weights = {name: tensor for name, tensor in stored.items() if name not in parts}
        for name, shape in shapes.items():
            indices = stored[f"{name}.indices"].long()
            values = stored[f"{name}.values"]
            dense = torch.zeros(int(torch.tensor(shape).prod()), dtype=values.dtype)
            dense[indices] = values
            weights[name] = dense.reshape(shape)
    except (KeyError, IndexError, RuntimeError, ValueError, json.JSONDecodeError) as error:
        raise UserError(f"corrupt packed weights in {path}: {error}") from None
    return weights
