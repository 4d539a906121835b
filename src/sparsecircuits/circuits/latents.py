"""SAE latents as circuit nodes: a spliced SAE's latents replace a layer's MLP neurons.

Two kinds of spliced module (sae.splice) stand in for the MLP of block L:

- a transcoder from `blocks.L.hook_mlp_in` to `blocks.L.hook_mlp_out` (the MLP's replacement):
  latents `L.mlp_out_sae.i`, linked from the MLP input channels through W_enc and to the MLP
  output channels through W_dec;
- an SAE on the neurons, `blocks.L.mlp.hook_post`: latents `L.mlp_sae.i`, linked from the
  input channels through |W_enc|^T |W_fc| and to the output channels through |W_proj| |W_dec|^T
  (a path exists where the product is nonzero; the edge's weight is the product, a strength
  without a sign).

Each also brings one error node (`L.mlp_out_sae_error.0`, `L.mlp_sae_error.0`): the whole
reconstruction error, kept or replaced by its mean at once, linked to every input and output
channel the MLP's own weights reach. A circuit that leaves the error out runs that MLP on the
latents alone. The neurons of such a layer are no longer nodes: the splice writes
decode(f') + e' whatever they computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sparsecircuits.circuits.nodes import NodeGroup
from sparsecircuits.errors import UserError
from sparsecircuits.model import GPT
from sparsecircuits.sae.splice import ERROR, LATENTS, written_layer


@dataclass(frozen=True)
class LatentLayer:
    """What one spliced module changes in the circuit space of its layer."""

    layer: int
    latents: NodeGroup
    error: NodeGroup
    # (source, target, weight [target width, source width]) replacing the MLP's two links
    links: tuple[tuple[NodeGroup | str, NodeGroup | str, torch.Tensor], ...]


def latent_layers(model: GPT) -> list[LatentLayer]:
    """The layers whose MLP neurons a spliced SAE or transcoder replaces, in layer order."""
    layers = [describe(model, hook, module) for hook, module in model.spliced_modules.items()]
    seen = [entry.layer for entry in layers]
    if len(set(seen)) != len(seen):
        raise UserError("two spliced SAEs replace the same layer's MLP: splice one per layer")
    return sorted(layers, key=lambda entry: entry.layer)


def describe(model: GPT, written: str, sae) -> LatentLayer:  # noqa: ANN001 (an SAE)
    config = sae.config
    layer = written_layer(sae)  # one line for a hook outside the blocks
    mlp = model.blocks[layer].mlp
    transcoder = (config.hook, config.out_hook) == (
        f"blocks.{layer}.hook_mlp_in",
        f"blocks.{layer}.hook_mlp_out",
    )
    on_neurons = not config.is_transcoder and config.hook == f"blocks.{layer}.mlp.hook_post"
    if not (transcoder or on_neurons):
        raise UserError(
            f"a circuit over latents needs a transcoder from blocks.L.hook_mlp_in to "
            f"blocks.L.hook_mlp_out or an SAE on blocks.L.mlp.hook_post, not one writing {written}"
        )
    kind = "mlp_out_sae" if transcoder else "mlp_sae"
    width = model.config.d_model
    latents = NodeGroup(layer, kind, f"{written}.{LATENTS}", config.d_sae)
    channels = config.d_out
    error = NodeGroup(layer, f"{kind}_error", f"{written}.{ERROR}", 1, channels=channels)
    with torch.no_grad():
        decoder = sae.W_dec.detach().float().cpu() * config.output_scale  # [d_sae, d_out]
        encoder = sae.W_enc.detach().float().cpu() / config.input_scale  # [d_in, d_sae]
        fc, proj = mlp.fc.weight.detach().float().cpu(), mlp.proj.weight.detach().float().cpu()
        if transcoder:
            into, out_of = encoder.T, decoder.T
        else:
            into, out_of = encoder.T.abs() @ fc.abs(), proj.abs() @ decoder.T.abs()
        error_in = (fc != 0).any(dim=0).float().view(1, width)
        error_out = (proj != 0).any(dim=1).float().view(width, 1)
    links = (
        ("mlp_in", latents, into),
        (latents, "mlp_out", out_of),
        ("mlp_in", error, error_in),
        (error, "mlp_out", error_out),
    )
    return LatentLayer(layer, latents, error, links)


def with_latents(groups: list[NodeGroup], layers: list[LatentLayer]) -> list[NodeGroup]:
    """`groups` with each replaced layer's neuron group swapped for its latents and error."""
    replaced = {entry.layer: entry for entry in layers}
    out = []
    for group in groups:
        entry = replaced.get(group.layer) if group.kind == "mlp_neuron" else None
        out.extend([entry.latents, entry.error] if entry is not None else [group])
    return out
