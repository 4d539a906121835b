"""Steering: set a unit to a value while the model runs, and see what it writes.

A unit is an SAE latent (`SAE_FOLDER:LATENT`) or a channel of a hook (`HOOK:INDEX`, e.g. an
MLP neuron `blocks.1.mlp.hook_post:17` or a residual channel). Clamping a latent adds
(value - f_i) * its decoder direction to the activation at the SAE's hook, so the SAE's
reconstruction error, and every other latent, stays as it was; clamping a channel sets it.
The edit applies at every position, the prompt's and the generated tokens'.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from sparsecircuits.errors import UserError
from sparsecircuits.loading.activations import iter_activations
from sparsecircuits.model import GPT, next_token_loss
from sparsecircuits.sae.base import SparseAutoencoder
from sparsecircuits.sae.files import CONFIG, load_sae

_STEER = re.compile(
    r"^(?P<target>.+):(?P<index>\d+)=(?P<value>[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)$"
)


@dataclass(frozen=True)
class Steer:
    target: str  # an SAE folder or a hook name
    index: int  # the latent or channel
    value: float


def parse_steer(text: str) -> Steer:
    match = _STEER.match(text)
    if match is None:
        raise UserError(f"--steer {text!r}: expected SAE_FOLDER:LATENT=VALUE or HOOK:INDEX=VALUE")
    value = float(match["value"])
    if not abs(value) < 1e6:
        raise UserError(f"--steer {text!r}: the value must be finite and below 1e6 in size")
    return Steer(match["target"], int(match["index"]), value)


def steering_edits(
    model: GPT, steers: list[Steer], model_sha256: str, force: bool = False
) -> dict[str, Callable]:
    """Hook edits for `model.edit` that apply every steer (several on one hook compose)."""
    edits: dict[str, list[Callable]] = {}
    for steer in steers:
        if (Path(steer.target) / CONFIG).is_file():
            sae = load_sae(Path(steer.target), model_sha256=model_sha256, force=force)
            sae.eval().to(next(model.parameters()).device)
            hook, edit = sae.config.hook, clamp_latent(sae, steer.index, steer.value)
            if sae.config.is_transcoder:
                raise UserError(f"{steer.target} is a transcoder: steer an SAE, or the hook itself")
        else:
            (hook,) = resolve_one(model, steer.target)
            edit = clamp_channel(steer.index, steer.value)
        edits.setdefault(hook, []).append(edit)
    return {hook: chained(functions) for hook, functions in edits.items()}


def resolve_one(model: GPT, name: str) -> list[str]:
    names = model.resolve_hook_names(name)  # unknown: one line with close matches
    if len(names) != 1:
        raise UserError(f"--steer {name}: name one hook point (or an SAE folder), not a pattern")
    return names


def clamp_latent(sae: SparseAutoencoder, latent: int, value: float) -> Callable:
    if not 0 <= latent < sae.config.d_sae:
        raise UserError(f"latent {latent} is not one of the SAE's 0..{sae.config.d_sae - 1}")
    direction = sae.W_dec[latent].detach() * sae.config.output_scale

    def edit(act: torch.Tensor, hook: object) -> torch.Tensor:
        with torch.no_grad():
            current = sae.encode(act.to(direction.dtype))[..., latent]
        return act + ((value - current)[..., None] * direction.to(act.device)).to(act.dtype)

    return edit


def clamp_channel(index: int, value: float) -> Callable:
    def edit(act: torch.Tensor, hook: object) -> torch.Tensor:
        if not 0 <= index < act.shape[-1]:
            raise UserError(f"channel {index} is not one of the hook's 0..{act.shape[-1] - 1}")
        act = act.clone()
        act[..., index] = value
        return act

    return edit


def chained(functions: list[Callable]) -> Callable:
    def edit(act: torch.Tensor, hook: object) -> torch.Tensor:
        for function in functions:
            act = function(act, hook)
        return act

    return edit


@torch.no_grad()
def steered_generation(run, prompt: str, edits: dict[str, Callable], options: dict) -> dict:  # noqa: ANN001
    """The prompt's continuation without and with the edits (the same seed for both), and
    the edits' cost in next-token loss on held-out windows."""
    model = run.model
    device = next(model.parameters()).device
    ids = run.tokenizer.encode(prompt)[-model.config.n_ctx :]
    if not ids:
        raise UserError("--prompt is empty after tokenisation")
    tokens = torch.tensor([ids], device=device)

    def continuation() -> list[int]:
        generator = torch.Generator(device=device).manual_seed(options["seed"])
        out = model.generate(
            tokens,
            options["max_new_tokens"],
            temperature=options["temperature"],
            top_k=options["top_k"],
            generator=generator,
        )
        return out[0, len(ids) :].tolist()

    plain = continuation()
    result: dict = {"prompt": prompt, "completion": run.tokenizer.decode(plain), "ids": plain}
    if not edits:
        return result
    with model.edit(edits):
        steered = continuation()
    result |= {"steered_completion": run.tokenizer.decode(steered), "steered_ids": steered}
    if options["cost_tokens"]:
        clean, steered = (
            held_out_loss(run, {}, options["cost_tokens"]),
            held_out_loss(run, edits, options["cost_tokens"]),
        )
        result |= {
            "cost_tokens": options["cost_tokens"],
            "loss": clean,
            "steered_loss": steered,
            "loss_cost": steered - clean,
        }
    return result


@torch.no_grad()
def held_out_loss(run, edits: dict[str, Callable], n_tokens: int) -> float:  # noqa: ANN001
    """Mean next-token loss over the first windows of the run's validation split."""
    total, count = 0.0, 0
    for batch in iter_activations(run, "hook_embed", n_tokens, 8, split="val"):
        tokens = batch.tokens.to(next(run.model.parameters()).device)
        with run.model.edit(edits):
            logits = run.model(tokens[:, :-1])
        total += float(next_token_loss(logits, tokens[:, 1:])) * tokens[:, 1:].numel()
        count += tokens[:, 1:].numel()
    return total / count
