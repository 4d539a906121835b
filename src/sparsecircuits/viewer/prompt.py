"""The live prompt page's numbers: the next-token distribution, the logit lens at the last
token, the strongest MLP neurons at each token and every head's attention pattern."""

from __future__ import annotations

import torch

from sparsecircuits.errors import UserError
from sparsecircuits.interp.lens import layer_labels, lens_readout
from sparsecircuits.viewer.site import ViewedRun

MAX_PROMPT_CHARACTERS = 4000
TOP_TOKENS, TOP_UNITS = 10, 3


@torch.no_grad()
def analyse_prompt(viewed: ViewedRun, text: str) -> dict:
    """Everything the prompt page shows, as JSON-ready data (token strings unescaped: the page
    sets them as text)."""
    run = viewed.run
    if not isinstance(text, str) or not text.strip():
        raise UserError("type a prompt first")
    if len(text) > MAX_PROMPT_CHARACTERS:
        raise UserError(f"the prompt is longer than {MAX_PROMPT_CHARACTERS:,} characters")
    tokenizer, model = run.tokenizer, run.model
    ids = tokenizer.encode(text)[-model.config.n_ctx :]
    device = next(model.parameters()).device
    tokens = torch.tensor([ids], device=device)
    texts = [tokenizer.id_to_token_text(i) for i in ids]
    hooks = ["blocks.*.attn.hook_pattern", "blocks.*.mlp.hook_post"]
    with viewed.lock:
        logits, cache = model.run_with_cache(tokens, hooks)
        last = torch.tensor([len(ids) - 1], device=device)
        lens = lens_readout(model, tokens, positions=last, k=1)
    probabilities = logits[0, -1].float().softmax(-1)
    top = probabilities.topk(min(TOP_TOKENS, probabilities.numel()))
    neurons = cache.stacked("blocks.*.mlp.hook_post")[:, 0]  # [layer, pos, d_mlp]
    return {
        "tokens": texts,
        "next": [
            [tokenizer.id_to_token_text(int(i)), float(p)]
            for p, i in zip(top.values, top.indices, strict=True)
        ],
        "lens": [
            [
                label,
                tokenizer.id_to_token_text(int(lens.top_tokens[layer, 0, 0])),
                float(lens.top_probability[layer, 0, 0]),
            ]
            for layer, label in enumerate(layer_labels(model))
        ],
        "units": [[texts[p], strongest_neurons(neurons[:, p])] for p in range(len(ids))],
        "attention": [
            [[[round(float(v), 4) for v in row] for row in head] for head in pattern[0]]
            for pattern in (
                cache[f"blocks.{layer}.attn.hook_pattern"] for layer in range(model.config.n_layer)
            )
        ],
    }


def strongest_neurons(values: torch.Tensor) -> list[list]:
    """The TOP_UNITS neurons of largest |activation| over all layers ([layer, d_mlp])."""
    flat = values.flatten()
    order = flat.abs().topk(min(TOP_UNITS, flat.numel())).indices
    width = values.shape[1]
    return [[f"{int(i) // width}.mlp.{int(i) % width}", float(flat[i])] for i in order]
