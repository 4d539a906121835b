"""Activation patching, attribution patching and causal tracing: one generic core.

Every method here runs the model on a corrupted input, puts some of the clean run's
activations back at one hook, and measures a metric. A patch is a boolean mask over the
activation (broadcast against [pairs, positions, ...]): True where the clean value goes in. A
scan over many patches stacks them along the batch, so one forward pass evaluates a chunk of
patches for all pairs at once; the specialisations (residual stream by layer x position,
attention heads, MLP neurons) only build the masks and lay out the grid.

Attribution patching estimates every patch of a scan at once to first order, from one clean
pass, one corrupted pass and one backward pass: effect ~ sum over the mask of
(clean - corrupted) * d metric / d activation. Causal tracing (ROME) is the same scan with the
corruption being Gaussian noise on the subject tokens' embeddings instead of other tokens.

The pairs are a `tasks.TaskBatch`: A rows clean, B rows corrupted. A clean activation goes to
the corrupted position aligned to it by the batch's token-level diff (`TaskBatch.alignments`),
and corrupted positions with no clean counterpart are never patched; causal tracing noises
exactly the clean tokens that diff marks as differing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from sparsecircuits.errors import UserError
from sparsecircuits.interp.task_pairs import TokenText, position_labels, shared_positions
from sparsecircuits.loading.memory import FLOAT_BYTES, forward_bytes, require_memory
from sparsecircuits.model import GPT, GPTConfig
from sparsecircuits.model.hooks import HookFn
from sparsecircuits.tasks import TaskBatch, logit_margins

# A metric maps the last-token logits [rows, vocab] of the pairs to one value per row.
Metric = Callable[[torch.Tensor, TaskBatch], torch.Tensor]
SITES = ("resid", "heads", "neurons")
SCAN_CHUNK = 16  # patches stacked into one forward pass of a scan


def logit_difference(logits: torch.Tensor, pairs: TaskBatch) -> torch.Tensor:
    """logit(clean answer) - logit(corrupted answer): how far the model leans to the clean one."""
    return logit_margins(logits, pairs.clean_answer, pairs.corrupted_answer)


def answer_probability(logits: torch.Tensor, pairs: TaskBatch) -> torch.Tensor:
    """Probability of the clean answer over the whole vocabulary."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    return logits.float().softmax(dim=-1)[rows, pairs.clean_answer]


METRICS: dict[str, Metric] = {"logit_diff": logit_difference, "prob": answer_probability}


@dataclass
class Corruption:
    """How the corrupted run differs from the clean one: other tokens, and/or edits (such as
    noise on embeddings) applied in every corrupted pass."""

    tokens: torch.Tensor  # [n, T]
    edits: dict[str, HookFn] | None = None


def other_prompts(pairs: TaskBatch) -> Corruption:
    return Corruption(pairs.corrupted)


@dataclass
class Baselines:
    clean: float  # the metric on the clean run (mean over pairs)
    corrupted: float  # on the corrupted run, nothing restored

    def recovered(self, value: torch.Tensor) -> torch.Tensor:
        """The share of the clean-minus-corrupted gap a patch restores (1: all of it)."""
        gap = self.clean - self.corrupted
        return (value - self.corrupted) / gap if abs(gap) > 1e-9 else value * float("nan")


def repeated_edits(edits: dict[str, HookFn] | None, copies: int) -> dict[str, HookFn]:
    """Corruption edits made for [n] rows, applied to `copies` stacked copies of the batch."""
    if not edits:
        return {}

    def stacked(fn: HookFn) -> HookFn:
        def apply(x: torch.Tensor, hook) -> torch.Tensor:  # noqa: ANN001
            parts = x.chunk(copies)
            edited = [fn(part, hook) for part in parts]
            return torch.cat(
                [new if new is not None else old for new, old in zip(edited, parts, strict=True)]
            )

        return apply

    return {name: stacked(fn) for name, fn in edits.items()}


@torch.no_grad()
def metric_of(
    model: GPT,
    tokens: torch.Tensor,
    last: torch.Tensor,
    pairs: TaskBatch,
    metric: Metric,
    edits: dict[str, HookFn] | None = None,
) -> torch.Tensor:
    """[n] the metric of one run of `tokens` (with `edits` attached), read at `last`."""
    with model.edit(edits or {}):
        return metric(model(tokens, logits_at=last), pairs).float()


def baselines(model: GPT, pairs: TaskBatch, corruption: Corruption, metric: Metric) -> Baselines:
    clean = metric_of(model, pairs.clean, pairs.clean_last, pairs, metric).mean()
    corrupted = metric_of(
        model, corruption.tokens, pairs.corrupted_last, pairs, metric, corruption.edits
    ).mean()
    return Baselines(float(clean), float(corrupted))


@torch.no_grad()
def patch_scan(
    model: GPT,
    pairs: TaskBatch,
    hook: str,
    masks: torch.Tensor,
    metric: Metric = logit_difference,
    corruption: Corruption | None = None,
    chunk: int = SCAN_CHUNK,
) -> torch.Tensor:
    """[n_patches] the mean metric of the corrupted run with each mask's clean values put in.

    `masks` is [n_patches, *dims] with dims broadcastable against the activation at `hook`
    ([n, T, ...], same number of dims). The clean activation comes from one clean pass; then
    each chunk of patches runs as one stacked batch.
    """
    corruption = corruption or other_prompts(pairs)
    cached = model.run_with_cache(pairs.clean, hook)[1][hook]
    clean, valid = pairs.at_corrupted_positions(cached)
    if masks.dim() != clean.dim() + 1:
        raise ValueError(f"masks for {hook} need {clean.dim() + 1} dims, got {masks.dim()}")
    masks = masks.to(clean.device) & valid.view(*valid.shape, *([1] * (clean.dim() - 2)))
    results = []
    for start in range(0, masks.shape[0], chunk):
        block = masks[start : start + chunk].to(clean.device)
        copies = block.shape[0]

        def put_back(x: torch.Tensor, _hook, block=block, copies=copies) -> torch.Tensor:  # noqa: ANN001
            return torch.where(block, clean, x.view(copies, *clean.shape)).view_as(x)

        stacked = repeat_pairs(pairs, copies)
        edits = repeated_edits(corruption.edits, copies)
        with model.edit(edits), model.edit({hook: put_back}):
            logits = model(corruption.tokens.repeat(copies, 1), logits_at=stacked.corrupted_last)
        results.append(metric(logits, stacked).float().view(copies, pairs.n_pairs).mean(dim=1))
    return torch.cat(results)


def attribution_effects(
    model: GPT,
    pairs: TaskBatch,
    hooks: list[str],
    metric: Metric = logit_difference,
    corruption: Corruption | None = None,
) -> dict[str, torch.Tensor]:
    """(clean - corrupted) * d mean-metric / d activation, elementwise, at every hook: the
    first-order effect of patching each single value. One clean pass, one corrupted pass, one
    backward pass, however many hooks and patches."""
    corruption = corruption or other_prompts(pairs)
    with torch.no_grad():
        clean = model.run_with_cache(pairs.clean, hooks)[1]
    with model.edit(corruption.edits or {}), model.cache(hooks, detach=False) as corrupted:
        logits = model(corruption.tokens, logits_at=pairs.corrupted_last)
        value = metric(logits, pairs).float().mean()
    gradients = torch.autograd.grad(value, [corrupted[h] for h in hooks], allow_unused=True)
    effects = {}
    for hook, gradient in zip(hooks, gradients, strict=True):
        aligned, valid = pairs.at_corrupted_positions(clean[hook])
        if gradient is None:  # the metric does not depend on this hook
            effects[hook] = torch.zeros_like(aligned)
            continue
        valid = valid.view(*valid.shape, *([1] * (aligned.dim() - 2)))
        effects[hook] = ((aligned - corrupted[hook].detach()) * gradient * valid).detach()
    return effects


def masked_sums(effects: torch.Tensor, masks: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """[n_patches] the summed effects inside each mask: attribution's estimate of each patch."""
    return torch.cat(
        [
            (masks[start : start + chunk].to(effects.device) * effects).flatten(1).sum(dim=1)
            for start in range(0, masks.shape[0], chunk)
        ]
    )


def repeat_pairs(pairs: TaskBatch, copies: int) -> TaskBatch:
    """`copies` copies of every pair, copy after copy (pair order 0..n-1, 0..n-1, ...)."""
    return pairs.subset(torch.arange(pairs.n_pairs).repeat(copies))


# The specialisations: which hook each row of the grid patches, and the patches of a row.
@dataclass(frozen=True)
class Site:
    name: str
    hook: str  # with {layer}
    column_axis: str
    layers: tuple[int, ...] | None = None  # None: every layer
    width: int = 0  # channels of a "neuron" or "latent" column axis (0: the MLP's)

    def rows(self, model: GPT) -> list[int]:
        return list(self.layers if self.layers is not None else range(model.config.n_layer))

    def hooks(self, model: GPT) -> list[str]:
        return [self.hook.format(layer=layer) for layer in self.rows(model)]

    def channels(self, config: GPTConfig) -> int:
        return self.width or config.d_mlp

    def masks(
        self, model: GPT, pairs: TaskBatch, token_text: TokenText | None = None
    ) -> tuple[torch.Tensor, list[str]]:
        """[n_patches, ...] masks for one layer's hook, and a label per patch."""
        config = model.config
        if self.column_axis == "position":
            # One column per clean position counted back from the last token; in each pair it
            # marks the corrupted position aligned to that clean token (none if it has none).
            source = pairs.counterparts()  # [n, T]: clean position of each corrupted one
            back = torch.arange(shared_positions(pairs) - 1, -1, -1, device=source.device)
            wanted = pairs.clean_last.to(source.device).view(1, -1, 1) - back.view(-1, 1, 1)
            masks = (source.unsqueeze(0) == wanted).unsqueeze(-1)  # [K, n, T, 1]
            return masks, position_labels(pairs, token_text)
        if self.column_axis == "head":
            eye = torch.eye(config.n_head, dtype=torch.bool)
            return eye.view(config.n_head, 1, 1, config.n_head, 1), [
                f"H{h}" for h in range(config.n_head)
            ]
        width = self.channels(config)
        eye = torch.eye(width, dtype=torch.bool)
        return eye.view(width, 1, 1, width), [str(i) for i in range(width)]


PATCH_SITES = {
    "resid": Site("resid", "blocks.{layer}.hook_resid_pre", "position"),
    "heads": Site("heads", "blocks.{layer}.attn.hook_z", "head"),
    "neurons": Site("neurons", "blocks.{layer}.mlp.hook_post", "neuron"),
}


def latent_site(latents_hook: str, layer: int, d_sae: int) -> Site:
    """The latents of an SAE spliced into layer `layer` (sae.splice), one column each."""
    return Site("latents", latents_hook, "latent", layers=(layer,), width=d_sae)


# Causal tracing restores a layer's output, its MLP's or its attention's (ROME's three kinds).
TRACE_SITES = {
    "resid": Site("resid", "blocks.{layer}.hook_resid_post", "position"),
    "mlp": Site("mlp", "blocks.{layer}.hook_mlp_out", "position"),
    "attn": Site("attn", "blocks.{layer}.hook_attn_out", "position"),
}


@dataclass
class PatchResult:
    site: str
    method: str  # "activation", "attribution" or "causal tracing"
    column_axis: str  # "position", "head", "neuron" or "latent"
    values: torch.Tensor  # [rows, n_patches]: share of the clean-corrupted gap restored
    columns: list[str]
    baselines: Baselines
    metric: str
    n_pairs: int
    layers: list[int]  # each row's layer


def patching(
    model: GPT,
    pairs: TaskBatch,
    site: str = "resid",
    method: str = "activation",
    metric: str = "logit_diff",
    corruption: Corruption | None = None,
    sites: dict[str, Site] = PATCH_SITES,
    last: int | None = None,
    token_text: TokenText | None = None,
) -> PatchResult:
    """Patch every layer x (position | head | neuron) of `site` from clean into corrupted,
    or estimate it all by attribution; values are the share of the metric's gap restored.
    `last` keeps only the last positions of a position scan; `token_text(id)` labels them."""
    if site not in sites:
        raise UserError(f"unknown site {site!r} (choose from {', '.join(sites)})")
    if metric not in METRICS:
        raise UserError(f"unknown metric {metric!r} (choose from {', '.join(METRICS)})")
    if method not in ("activation", "attribution"):
        raise UserError(f"unknown method {method!r} (activation or attribution)")
    where, score = sites[site], METRICS[metric]
    positions = pairs.corrupted.shape[1]
    n = pairs.n_pairs
    needed = patching_bytes(model.config, where, n, positions, method == "attribution")
    require_memory(needed, f"--n {n} pairs of {positions} tokens", model_device(model))
    corruption = corruption or other_prompts(pairs)
    base = baselines(model, pairs, corruption, score)
    masks, columns = where.masks(model, pairs, token_text)
    if last is not None and where.column_axis == "position":
        masks, columns = masks[-last:], columns[-last:]
    hooks = where.hooks(model)
    if method == "attribution":
        effects = attribution_effects(model, pairs, hooks, score, corruption)
        rows = [base.corrupted + masked_sums(effects[hook], masks) for hook in hooks]
    else:
        rows = [patch_scan(model, pairs, hook, masks, score, corruption) for hook in hooks]
    values = base.recovered(torch.stack(rows).cpu())
    return PatchResult(
        site, method, where.column_axis, values, columns, base, metric, n, where.rows(model)
    )


def patching_bytes(
    config: GPTConfig, site: Site, rows: int, positions: int, attribution: bool
) -> int:
    """Memory of `patching` on `rows` pairs of `positions` tokens: the patch masks, the clean
    values at a hook and one stacked forward pass of SCAN_CHUNK patches; by attribution, one
    pass with its backward and every layer's clean, corrupted and gradient values instead."""
    patches, mask_width = {
        "position": (positions, 1),
        "head": (config.n_head, config.n_head),
        "neuron": (site.channels(config),) * 2,
        "latent": (site.channels(config),) * 2,
    }[site.column_axis]
    masks = patches * rows * positions * mask_width  # bool: a byte each
    widest = max(config.d_model, config.d_attn, config.d_mlp, site.width)
    values = rows * positions * widest * FLOAT_BYTES
    if attribution:
        backward = forward_bytes(config, rows, positions, backward=True, logit_positions=1)
        return masks + backward + 4 * config.n_layer * values
    scan = forward_bytes(config, SCAN_CHUNK * rows, positions, logit_positions=1)
    return masks + scan + 2 * values


def model_device(model: GPT) -> str:
    return str(next(model.parameters()).device)


def clean_against_itself(pairs: TaskBatch) -> TaskBatch:
    """The clean prompts paired with themselves: causal tracing's corrupted run is the clean
    prompt with noise, so its positions align one to one and its last token is the clean one.
    The answers stay the pair's: the clean answer against the corrupted prompt's."""
    n = pairs.n_pairs
    twice = lambda values: torch.cat([values, values])  # noqa: E731
    return TaskBatch(
        tokens=twice(pairs.clean),
        last=twice(pairs.clean_last),
        correct=twice(pairs.clean_answer),
        wrong=twice(pairs.corrupted_answer),
        n_pairs=n,
    )


def noised_subjects(
    model: GPT, pairs: TaskBatch, samples: int = 5, noise: float = 3.0, seed: int = 0
) -> tuple[TaskBatch, Corruption]:
    """ROME's corruption: the clean prompts with Gaussian noise (`noise` x the embeddings'
    standard deviation) added to the subject tokens' embeddings, `samples` draws per pair.
    The subject is what the pair's alignment marks as differing in the clean prompt: the
    tokens that decide the answer, and none of the tokens an insertion merely shifted."""
    subject = pairs.differing_positions()  # [n, T]
    identical = int((~subject.any(dim=1)).sum())
    if identical:
        raise UserError(
            f"{identical} of {pairs.n_pairs} pairs have identical clean and corrupted prompts: "
            "no token to noise"
        )
    # The noise itself, and the scan of `samples` noised copies of every pair that follows.
    rows, positions, config = samples * pairs.n_pairs, pairs.clean.shape[1], model.config
    noise_bytes = rows * positions * config.d_model * FLOAT_BYTES
    scan = patching_bytes(config, TRACE_SITES["resid"], rows, positions, attribution=False)
    what = f"--samples {samples} of --n {pairs.n_pairs} pairs of {positions} tokens"
    require_memory(noise_bytes + scan, what, model_device(model))
    repeated = repeat_pairs(clean_against_itself(pairs), samples)
    scale = noise * float(model.wte.weight.detach().std())
    generator = torch.Generator().manual_seed(seed)
    shape = (*repeated.clean.shape, model.config.d_model)
    device = next(model.parameters()).device
    noise_values = (torch.randn(shape, generator=generator) * scale).to(device)
    noise_values = noise_values * subject.repeat(samples, 1).unsqueeze(-1).to(device)

    def add_noise(x: torch.Tensor, _hook) -> torch.Tensor:  # noqa: ANN001
        return x + noise_values.to(x.dtype)

    return repeated, Corruption(repeated.clean, {"hook_embed": add_noise})


def causal_trace(
    model: GPT,
    pairs: TaskBatch,
    kind: str = "resid",
    samples: int = 5,
    seed: int = 0,
    last: int | None = None,
    token_text: TokenText | None = None,
) -> PatchResult:
    """Recovery of the clean answer's probability when one hidden state (layer x position) of
    the noised run is restored from the clean run: ROME's causal tracing heatmap. Columns are
    clean positions; a label ends in "*" where the first pair's token is noised."""
    repeated, corruption = noised_subjects(model, pairs, samples=samples, seed=seed)
    result = patching(
        model,
        repeated,
        kind,
        "activation",
        "prob",
        corruption,
        sites=TRACE_SITES,
        last=last,
        token_text=token_text,
    )
    noised = set(pairs.alignments[0].differing)
    first_last = int(pairs.clean_last[0])
    columns = list(result.columns)
    for k in range(len(columns)):
        if first_last - (len(columns) - 1 - k) in noised:
            columns[k] += "*"
    # Means are over `samples` noise draws of each pair; the pairs are the ones given.
    return replace(result, method="causal tracing", columns=columns, n_pairs=pairs.n_pairs)
