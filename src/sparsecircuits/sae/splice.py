"""An SAE spliced into its model: its latents become a hook point like any other.

Splicing adds two hook points beside the SAE's hook H (for a transcoder, beside the hook it
writes):

    H.hook_sae_latents   f = encode(x), [batch, pos, d_sae]
    H.hook_sae_error     e = x - decode(f), [batch, pos, d]

and writes x + (f' - f) W_dec + (e' - e) at H, where f' and e' are what those hook points hand
on. Unedited, both differences are exactly zero: the model computes what it computed before,
bit for bit. Its gradients are those of decode(f') + e' (a term of value exactly zero carries
them), so attribution reaches the latents and the error, and reaches x through them as through
the identity. An edit of f' (clamping, patching, mean-ablating latents) moves the output along
the latents' decoder directions, the error term kept; replacing e' too (e.g. by its mean)
leaves the model running on the latents alone. Nothing is encoded while no function is attached
to either hook point, so a spliced model costs nothing until a latent is read or edited.

Because the units of a spliced model are not those of the bare model, `run_with_sae` gives the
run a new identity (`Run.weights_sha256` mixes in the SAE's weights): explanations, records and
circuits of latents are stored under it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from sparsecircuits.errors import UserError
from sparsecircuits.loading import Run
from sparsecircuits.model import GPT
from sparsecircuits.model.hooks import HookPoint
from sparsecircuits.sae.base import SparseAutoencoder
from sparsecircuits.sae.files import load_sae

LATENTS = "hook_sae_latents"
ERROR = "hook_sae_error"


def latents_hook(sae: SparseAutoencoder) -> str:
    """The name of the hook point holding the SAE's latents once spliced."""
    return f"{written_hook(sae)}.{LATENTS}"


def error_hook(sae: SparseAutoencoder) -> str:
    return f"{written_hook(sae)}.{ERROR}"


def written_hook(sae: SparseAutoencoder) -> str:
    return sae.config.out_hook or sae.config.hook


def written_layer(sae: SparseAutoencoder) -> int:
    """The block whose hook the SAE writes (latents of the embedding or the final norm have
    no block)."""
    parts = written_hook(sae).split(".")
    if len(parts) < 3 or parts[0] != "blocks" or not parts[1].isdigit():
        raise UserError(f"the SAE writes {written_hook(sae)}, not a hook of a block (blocks.L.*)")
    return int(parts[1])


@dataclass
class Splice:
    """A spliced SAE; `remove()` takes it out again."""

    model: GPT
    sae: SparseAutoencoder
    latents: HookPoint
    error: HookPoint
    attached: list[tuple[HookPoint, object]]

    def remove(self) -> None:
        for point, function in self.attached:
            (point.fns if function in point.fns else point.observers).remove(function)
        for point in (self.latents, self.error):
            self.model.remove_hook_point(point.name)
        self.model.spliced_modules.pop(written_hook(self.sae), None)

    def __enter__(self) -> Splice:
        return self

    def __exit__(self, *exception: object) -> None:
        self.remove()


def splice_sae(model: GPT, sae: SparseAutoencoder) -> Splice:
    """Splice `sae` into `model` until `remove()` (or the end of a `with` block)."""
    config = sae.config
    for name in filter(None, (config.hook, config.out_hook)):
        resolved = model.resolve_hook_names(name)  # unknown: one line with close matches
        if resolved != [name]:
            raise UserError(f"the SAE's hook {name!r} is a pattern, not one hook point")
    sae.to(next(model.parameters()).device)
    latents = model.add_hook_point(latents_hook(sae))
    try:
        error = model.add_hook_point(error_hook(sae))
    except UserError:
        model.remove_hook_point(latents.name)
        raise
    read: dict[str, torch.Tensor] = {}  # a transcoder's input, read earlier in the same pass
    direction = (sae.W_dec * config.output_scale).detach()

    def write(y: torch.Tensor, point: HookPoint) -> torch.Tensor | None:
        x = read.pop("x", None) if config.is_transcoder else y
        if x is None or not (latents.active or error.active):
            return None
        f = sae.encode(x.to(direction.dtype))
        e = y.to(direction.dtype) - sae.decode(f)
        # Views, so that a gradient read at a hook point is the one of its own tensor (f also
        # feeds e: without the view the two would meet and cancel there).
        f, e = f.view_as(f), e.view_as(e)
        edited_f, edited_e = latents(f), error(e)
        tracked = torch.is_grad_enabled() and (edited_f.requires_grad or edited_e.requires_grad)
        if edited_f is f and edited_e is e and not tracked:
            return None
        value = y + ((edited_f - f) @ direction.to(f.device) + (edited_e - e)).to(y.dtype)
        if not tracked:
            return value
        # The value above is exact (y itself when nothing was edited); the gradients are
        # those of decode(f') + e', added as a term that is exactly zero.
        carried = sae.decode(edited_f) + edited_e
        return value.detach() + (carried - carried.detach()).to(y.dtype)

    def keep_input(x: torch.Tensor) -> None:
        read["x"] = x

    attached: list[tuple[HookPoint, object]] = []
    if config.is_transcoder:  # it reads its input as the model passes it on, edits included
        reader = model._hook_points[config.hook]
        reader.observers.append(keep_input)
        attached.append((reader, keep_input))
    writer = model._hook_points[written_hook(sae)]
    writer.fns.insert(0, write)  # before any edit a caller attaches to the same hook
    attached.append((writer, write))
    model.spliced_modules[written_hook(sae)] = sae
    return Splice(model, sae, latents, error, attached)


def sae_sha256(sae: SparseAutoencoder) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(sae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def run_with_sae(run: Run, folder: Path, force: bool = False) -> tuple[Run, Splice]:
    """`run` with the SAE in `folder` spliced into its model (refused if the SAE was trained
    on another model, unless `force`); the returned run has an identity of its own."""
    sae = load_sae(Path(folder), model_sha256=run.weights_sha256, force=force).eval()
    for parameter in sae.parameters():
        parameter.requires_grad_(False)
    splice = splice_sae(run.model, sae)
    spliced = dataclasses.replace(run, spliced=(*run.spliced, (written_hook(sae), sae_sha256(sae))))
    return spliced, splice
