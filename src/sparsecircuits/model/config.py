"""The model's shape and options, saved as `config.json` beside the weights."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from sparsecircuits.errors import UserError

# Where AbsTopK activation sparsity can act (spec section 1).
ACTIVATION_SPARSITY_SITES = (
    "attn_in",
    "q",
    "k",
    "v",
    "attn_out",
    "mlp_in",
    "mlp_neuron",
    "mlp_out",
)


@dataclass
class GPTConfig:
    vocab_size: int = 2048
    n_layer: int = 4
    d_model: int = 128
    n_ctx: int = 256
    d_head: int = 16
    d_mlp: int = 0  # 0 means 4 * d_model
    learned_positions: bool = False
    bigram_table: bool = False
    attention_sink: bool = False
    afrac: float | None = None  # AbsTopK kept fraction; None switches activation sparsity off
    rms_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.d_mlp == 0:
            self.d_mlp = 4 * self.d_model
        if self.d_model % self.d_head:
            raise UserError(f"d_model {self.d_model} is not a multiple of d_head {self.d_head}")
        if self.afrac is not None and not 0 < self.afrac <= 1:
            raise UserError(f"afrac must be in (0, 1], got {self.afrac}")

    @property
    def n_head(self) -> int:
        return self.d_model // self.d_head

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> GPTConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise UserError(f"cannot read model config {path}: {error}") from None
        return cls.from_dict(data.get("model", data))
