"""The model's shape and options, saved as `config.json` beside the weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, with_config

from sparsecircuits.errors import UserError
from sparsecircuits.validation import load_json, validate

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


# A key the model does not know is refused rather than ignored: it is a typo or another
# program's config, and dropping it would load a model of another shape without a word.
@with_config(ConfigDict(extra="forbid"))
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
        for name in ("vocab_size", "n_layer", "d_model", "n_ctx", "d_head"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.d_mlp < 0:
            raise UserError(f"d_mlp must be 0 (4 * d_model) or more, got {self.d_mlp}")
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
    def from_dict(cls, data: dict, source: str | Path = "model config") -> GPTConfig:
        """The config in `data`, checked field by field; `source` names it in errors."""
        return validate(cls, data, source)

    @classmethod
    def load(cls, path: str | Path) -> GPTConfig:
        """The model config of a run's config.json (its "model" section) or of a bare file."""
        data = load_json(path, dict, "model config")
        if "model" in data:
            return validate(ModelSection, data, path).model
        return validate(cls, data, path)


class ModelSection(BaseModel):
    """A config.json read only for its model: the other sections are someone else's."""

    model_config = ConfigDict(extra="allow")
    model: GPTConfig
