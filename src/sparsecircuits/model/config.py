"""The model's shape and options, saved as `config.json` beside the weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator, with_config

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
# Sites on the residual stream itself, after each addition: only imported models use them.
RESIDUAL_SPARSITY_SITES = ("resid_mid", "resid_post")


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
    n_head: int = 0  # 0 means d_model // d_head; otherwise q/k/v are n_head * d_head wide
    d_mlp: int = 0  # 0 means 4 * d_model
    learned_positions: bool = False
    bigram_table: bool = False
    attention_sink: bool = False
    afrac: float | None = None  # AbsTopK kept fraction; None switches activation sparsity off
    afrac_sites: list[str] = field(default_factory=lambda: list(ACTIVATION_SPARSITY_SITES))
    # The options below keep the trained defaults; imported models (GPT-2, OpenAI's
    # circuit-sparsity release) set them to reproduce their source's forward pass exactly.
    norm: Literal["rms", "layer"] = "rms"
    norm_eps: float = 1e-6
    activation: Literal["gelu", "gelu_tanh", "relu"] = "gelu"
    tied_embeddings: bool = False  # the unembedding is the token embedding matrix

    @model_validator(mode="before")
    @classmethod
    def rename_old_keys(cls, data: Any) -> Any:
        # Runs saved before LayerNorm was an option called the norm's epsilon rms_eps.
        if isinstance(data, dict) and "rms_eps" in data and "norm_eps" not in data:
            data = {**data, "norm_eps": data["rms_eps"]}
            del data["rms_eps"]
        return data

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_layer", "d_model", "n_ctx", "d_head"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.d_mlp < 0:
            raise UserError(f"d_mlp must be 0 (4 * d_model) or more, got {self.d_mlp}")
        if self.d_mlp == 0:
            self.d_mlp = 4 * self.d_model
        if self.n_head < 0:
            raise UserError(f"n_head must be 0 (d_model // d_head) or more, got {self.n_head}")
        if self.n_head == 0:
            if self.d_model % self.d_head:
                raise UserError(f"d_model {self.d_model} is not a multiple of d_head {self.d_head}")
            self.n_head = self.d_model // self.d_head
        known = (*ACTIVATION_SPARSITY_SITES, *RESIDUAL_SPARSITY_SITES)
        unknown = [site for site in self.afrac_sites if site not in known]
        if unknown:
            raise UserError(f"unknown AbsTopK site {unknown[0]!r} (choose from {', '.join(known)})")
        if self.afrac is not None and not 0 < self.afrac <= 1:
            raise UserError(f"afrac must be in (0, 1], got {self.afrac}")

    @property
    def d_attn(self) -> int:
        """Width of the queries, keys and values: all heads side by side."""
        return self.n_head * self.d_head

    def site_width(self, site: str) -> int:
        """Channels at an activation site (ACTIVATION_SPARSITY_SITES and the residual ones)."""
        if site == "mlp_neuron":
            return self.d_mlp
        return self.d_attn if site in ("q", "k", "v") else self.d_model

    def sparsity_k(self, site: str) -> int | None:
        """How many channels AbsTopK keeps at `site`; None where it does not act."""
        if self.afrac is None or site not in self.afrac_sites:
            return None
        return max(1, int(self.afrac * self.site_width(site)))

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
