"""How good an SAE is on held-out tokens: reconstruction, and what splicing it into the model
costs the model (SAEBench's CE loss score).

    loss_recovered  (CE_ablated - CE_spliced) / (CE_ablated - CE_clean): 1 when the
                    reconstruction is as good as the activation for the model, 0 when it is no
                    better than replacing the activation by its mean over the tokens
    kl              mean KL(clean || spliced) of the next-token distributions, nats per token

The windows are the run's validation split (the SAE trained on the training split).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sparsecircuits.loading import Run
from sparsecircuits.loading.activations import iter_activations
from sparsecircuits.sae.base import SparseAutoencoder
from sparsecircuits.sae.metrics import ReconstructionTotals


@torch.no_grad()
def evaluate_sae(
    run: Run, sae: SparseAutoencoder, tokens: int = 65_536, batch_size: int = 8
) -> dict:
    device = next(run.model.parameters()).device
    sae.eval().to(device)
    config = sae.config
    hooks = [config.hook] + ([config.out_hook] if config.is_transcoder else [])
    target_hook = hooks[-1]
    totals = ReconstructionTotals()
    sums, count = None, 0
    windows = list(iter_activations(run, hooks, tokens, batch_size, split="val"))
    for batch in windows:  # reconstruction, and the target's mean for the ablation
        x = batch.activations[hooks[0]].to(device).float()
        y = batch.activations[target_hook].to(device).float()
        y_hat, f = sae(x)
        totals.add(y, y_hat, f)
        flat = y.flatten(0, -2)
        sums = flat.sum(dim=0) if sums is None else sums + flat.sum(dim=0)
        count += flat.shape[0]
    mean = sums / count
    losses = {"clean": 0.0, "spliced": 0.0, "ablated": 0.0}
    kl, predicted = 0.0, 0
    model = run.model
    for batch in windows:
        tokens = batch.tokens.to(device)
        tokens_in, targets = tokens[:, :-1], tokens[:, 1:]
        clean = model(tokens_in)
        spliced = model_with(model, tokens_in, splice_edits(sae, hooks))
        ablated = model_with(
            model,
            tokens_in,
            {target_hook: lambda act, hook: mean.to(act.device, act.dtype).expand_as(act)},
        )
        for name, logits in (("clean", clean), ("spliced", spliced), ("ablated", ablated)):
            losses[name] += float(
                F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum")
            )
        log_clean, log_spliced = clean.float().log_softmax(-1), spliced.float().log_softmax(-1)
        kl += float((log_clean.exp() * (log_clean - log_spliced)).sum())
        predicted += targets.numel()
    ce = {name: value / predicted for name, value in losses.items()}
    gap = ce["ablated"] - ce["clean"]
    return totals.result() | {
        "ce_clean": ce["clean"],
        "ce_spliced": ce["spliced"],
        "ce_ablated": ce["ablated"],
        "loss_recovered": (ce["ablated"] - ce["spliced"]) / gap if gap > 0 else float("nan"),
        "kl": kl / predicted,
    }


def splice_edits(sae: SparseAutoencoder, hooks: list[str]) -> dict:
    """Hook edits that replace the target activation by the SAE's output (a transcoder reads
    its input hook first, in the same forward pass)."""
    if len(hooks) == 1:
        return {hooks[0]: lambda act, hook: sae(act.float())[0].to(act.dtype)}
    seen: dict[str, torch.Tensor] = {}

    def remember(act: torch.Tensor, hook: object) -> None:
        seen["input"] = act

    def replace(act: torch.Tensor, hook: object) -> torch.Tensor:
        return sae(seen["input"].float())[0].to(act.dtype)

    return {hooks[0]: remember, hooks[1]: replace}


def model_with(model, tokens: torch.Tensor, edits: dict) -> torch.Tensor:
    with model.edit(edits):
        return model(tokens)
