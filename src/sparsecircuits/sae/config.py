"""What an SAE is: its architecture, widths, sparsity setting and where it reads and writes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sparsecircuits.errors import UserError

KINDS = ("relu", "topk", "batchtopk", "jumprelu")


@dataclass
class SAEConfig:
    arch: str  # one of KINDS
    d_in: int  # width of the hook read
    d_sae: int  # latents
    hook: str  # the hook point read, e.g. "blocks.2.hook_resid_post"
    out_hook: str | None = None  # a transcoder's target hook; None: reconstruct `hook`
    d_out: int = 0  # width of out_hook (0: d_in, an SAE)
    k: int | None = None  # topk and batchtopk: latents kept per activation (on average)
    l1_coef: float | None = None  # relu: weight of the decoder-norm-weighted L1 penalty
    l0_coef: float | None = None  # jumprelu: weight of the L0 penalty
    jumprelu_bandwidth: float = 0.001  # jumprelu: width of the straight-through kernel
    jumprelu_init_threshold: float = 0.001
    # Activations are divided by this before encoding (and outputs multiplied back), so one
    # l1/l0 coefficient means the same on every hook: set from data so that the mean squared
    # norm of an input is d_in (1.0 = raw activations).
    input_scale: float = 1.0
    output_scale: float = 1.0
    model_sha256: str = ""  # the model the SAE was trained on; loading against another is refused
    model_path: str = ""

    def __post_init__(self) -> None:
        if self.arch not in KINDS:
            raise UserError(
                f"unknown SAE architecture {self.arch!r} (choose from {', '.join(KINDS)})"
            )
        if self.d_out == 0:
            self.d_out = self.d_in
        for name in ("d_in", "d_sae", "d_out"):
            if getattr(self, name) < 1:
                raise UserError(f"SAE {name} must be at least 1, got {getattr(self, name)}")
        if self.out_hook is None and self.d_out != self.d_in:
            raise UserError(
                f"an SAE reconstructs its own hook: d_out {self.d_out} != d_in {self.d_in}"
            )
        needs_k = self.arch in ("topk", "batchtopk")
        if needs_k and (self.k is None or not 1 <= self.k <= self.d_sae):
            raise UserError(f"{self.arch} needs 1 <= k <= d_sae ({self.d_sae}), got k {self.k}")
        if self.arch == "relu" and (self.l1_coef is None or self.l1_coef < 0):
            raise UserError(f"relu needs an l1 coefficient >= 0, got {self.l1_coef}")
        if self.arch == "jumprelu" and (self.l0_coef is None or self.l0_coef < 0):
            raise UserError(f"jumprelu needs an l0 coefficient >= 0, got {self.l0_coef}")
        for name in ("input_scale", "output_scale", "jumprelu_bandwidth"):
            if not getattr(self, name) > 0:
                raise UserError(f"SAE {name} must be positive, got {getattr(self, name)}")

    @property
    def is_transcoder(self) -> bool:
        return self.out_hook is not None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SAEConfig:
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise UserError(f"SAE config has unknown fields {sorted(unknown)}")
        return cls(**data)
