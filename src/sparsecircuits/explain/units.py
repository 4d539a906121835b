"""Units to explain: one channel of one hook point (an MLP neuron, a residual channel, a q/k/v
channel, a channel an attention or MLP block writes), named like a circuit node.

A unit is (hook, index) over the hook's activation flattened to [..., channels] (q, k and v are
[batch, pos, head, d_head]: channel = head * d_head + i). `--layer L --kind K` picks a layer's
hook; a circuit file's nodes map onto the same units, so circuit nodes and neurons share one
explanation store. The latents of an SAE spliced into a block's hook (sae.splice) are units
too: kind "KIND_sae" (e.g. "2.resid_sae.962" reads blocks.2.hook_resid_post.hook_sae_latents),
their widths the SAE's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from sparsecircuits.errors import UserError
from sparsecircuits.model import GPTConfig
from sparsecircuits.sae.splice import LATENTS

# Unit kinds of a block and their hook inside block L; "mlp" (neurons) is the default.
KINDS = {
    "mlp": "mlp.hook_post",
    "resid": "hook_resid_post",
    "attn_in": "hook_attn_in",
    "q": "attn.hook_q",
    "k": "attn.hook_k",
    "v": "attn.hook_v",
    "attn_out": "hook_attn_out",
    "mlp_in": "hook_mlp_in",
    "mlp_out": "hook_mlp_out",
}
# Circuit node kinds (circuits.nodes) named differently here.
NODE_KINDS = {"mlp_neuron": "mlp"}
LATENT_SUFFIX = "_sae"


def latent_base(kind: str) -> str | None:
    """The hook kind whose SAE latents `kind` names ("resid" for "resid_sae"), else None."""
    base = kind.removesuffix(LATENT_SUFFIX)
    return base if base != kind and base in KINDS and base not in ("q", "k", "v") else None


def latent_layer_kind(hook: str) -> tuple[int, str]:
    """(layer, unit kind) of the latents of an SAE spliced into `hook`."""
    _, layer, suffix = (hook.split(".", 2) + ["", ""])[:3]
    kind = {inside: kind for kind, inside in KINDS.items()}.get(suffix)
    if not hook.startswith("blocks.") or not layer.isdigit() or latent_base(f"{kind}_sae") is None:
        choices = ", ".join(f"blocks.L.{KINDS[k]}" for k in KINDS if k not in ("q", "k", "v"))
        raise UserError(f"the SAE writes {hook}: latents are units on a block's {choices}")
    return int(layer), kind + LATENT_SUFFIX


@dataclass(frozen=True, order=True)
class Unit:
    layer: int  # the final norm counts as layer n_layer
    kind: str
    index: int

    @property
    def hook(self) -> str:
        if self.kind == "final_norm":
            return "hook_final_norm"
        base = latent_base(self.kind)
        if base is not None:
            return f"blocks.{self.layer}.{KINDS[base]}.{LATENTS}"
        return f"blocks.{self.layer}.{KINDS[self.kind]}"

    @property
    def name(self) -> str:
        return f"{self.layer}.{self.kind}.{self.index}"

    @classmethod
    def parse(cls, name: str) -> Unit:
        """A unit from its name, "LAYER.KIND.INDEX" (circuit node ids are accepted)."""
        parts = name.strip().split(".")
        if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
            raise UserError(f"bad unit name {name!r}: expected LAYER.KIND.INDEX, e.g. 1.mlp.17")
        kind = NODE_KINDS.get(parts[1], parts[1])
        if kind not in KINDS and kind != "final_norm" and latent_base(kind) is None:
            raise UserError(f"unknown unit kind {parts[1]!r} (choose from {', '.join(KINDS)})")
        return cls(int(parts[0]), kind, int(parts[2]))


def kind_width(config: GPTConfig, kind: str) -> int:
    return config.site_width("mlp_neuron" if kind == "mlp" else kind)


def layer_units(
    config: GPTConfig, layer: int, kind: str, indices: Iterable[int] | None
) -> list[Unit]:
    """The units of one layer's hook; all of its channels when `indices` is None."""
    if kind not in KINDS:
        raise UserError(f"unknown unit kind {kind!r} (choose from {', '.join(KINDS)})")
    if not 0 <= layer < config.n_layer:
        raise UserError(
            f"layer {layer} is out of range: the model has layers 0..{config.n_layer - 1}"
        )
    width = kind_width(config, kind)
    chosen = range(width) if indices is None else list(indices)
    return check_units(config, [Unit(layer, kind, index) for index in chosen])


def latent_units(
    config: GPTConfig, hook: str, d_sae: int, indices: Iterable[int] | None
) -> list[Unit]:
    """The latents (all when `indices` is None) of a d_sae-wide SAE spliced into `hook`."""
    layer, kind = latent_layer_kind(hook)
    chosen = range(d_sae) if indices is None else list(indices)
    return check_units(config, [Unit(layer, kind, index) for index in chosen], {kind: d_sae})


def check_units(
    config: GPTConfig, units: list[Unit], latent_widths: dict[str, int] | None = None
) -> list[Unit]:
    """`units`, once each, in order; a UserError for one the model does not have.
    `latent_widths`: the width of each spliced SAE's latents by unit kind."""
    if not units:
        raise UserError("no units to explain")
    latent_widths = latent_widths or {}
    for unit in units:
        last_layer = config.n_layer if unit.kind == "final_norm" else config.n_layer - 1
        if latent_base(unit.kind) is not None:
            if unit.kind not in latent_widths:
                raise UserError(f"unit {unit.name} is an SAE latent: name the SAE (--sae)")
            width = latent_widths[unit.kind]
        elif unit.kind == "final_norm":
            width = config.d_model
        else:
            width = kind_width(config, unit.kind)
        if not 0 <= unit.layer <= last_layer:
            raise UserError(f"unit {unit.name}: the model has layers 0..{last_layer}")
        if not 0 <= unit.index < width:
            raise UserError(f"unit {unit.name}: {unit.kind} has channels 0..{width - 1}")
    return list(dict.fromkeys(units))


def parse_indices(text: str, width: int) -> list[int]:
    """ "0,1,2" or "0-15" or a mix ("0-3,9") of channels 0..width-1. Each number is checked
    against the width before a range is expanded, so "0-10**12" is one line, not a list that
    fills the memory."""
    indices = []
    for part in (piece.strip() for piece in text.split(",")):
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise UserError(f"bad unit list {text!r}: use numbers and ranges, e.g. 0,3,8-15")
        for number in (low, high) if dash else (low,):
            digits = number.lstrip("0") or "0"  # int() of a million digits is slow itself
            if len(digits) > len(str(width)) or int(digits) >= width:
                shown = number if len(number) <= 20 else number[:17] + "..."
                raise UserError(f"unit {shown} of --units: the layer has channels 0..{width - 1}")
        indices.extend(range(int(low), int(high) + 1) if dash else [int(low)])
    return indices


def unit_activations(cache: dict[str, torch.Tensor], units: list[Unit]) -> torch.Tensor:
    """[batch, pos, len(units)] float32 activations of `units` from a cache of their hooks."""
    columns = []
    for hook in dict.fromkeys(unit.hook for unit in units):
        value = cache[hook]
        flat = value.flatten(-2) if value.dim() == 4 else value
        indices = torch.tensor([unit.index for unit in units if unit.hook == hook])
        columns.append(flat.index_select(-1, indices))
    stacked = torch.cat(columns, dim=-1).float()
    order = hook_major_order(units)
    return stacked[..., torch.argsort(torch.tensor(order))]


def hook_major_order(units: list[Unit]) -> list[int]:
    """Positions of `units` when grouped by hook (as unit_activations gathers them)."""
    hooks = list(dict.fromkeys(unit.hook for unit in units))
    return sorted(range(len(units)), key=lambda i: (hooks.index(units[i].hook), i))
