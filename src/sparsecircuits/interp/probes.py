"""Linear probes: is a labelled property linearly readable from an activation?

For each hook, the activation at one position per example is collected (inside the hook, so
only [examples, width] is kept), standardised with the training split's statistics, and a
multinomial logistic regression with a small L2 penalty is fitted full-batch with L-BFGS. A
probe is judged on held-out examples, beside two references: the majority class of the
training labels, and the same probe trained on shuffled training labels (the control: what
the probe reaches from the features' shape alone, with the property taken away). One shuffle
is a noisy control: where the features cluster by the property, labels shuffled by chance
slightly in line with the clusters carry the probe far from chance either way (0.35 to 0.75
on two clear clusters), so the control is the mean over several seeded shuffles, with its
spread.

Examples that belong together (the A and B prompts of one task pair) share a group and always
land in the same split, so a probe cannot pass by remembering one and answering for the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sparsecircuits.errors import UserError
from sparsecircuits.interp.figures import Grid
from sparsecircuits.loading import Run
from sparsecircuits.loading.memory import FLOAT_BYTES, forward_bytes, require_memory
from sparsecircuits.model import GPT
from sparsecircuits.model.hooks import HookFn, HookPoint
from sparsecircuits.tasks import encode_pairs, task_pairs

PROBE_KINDS = {
    "resid": "blocks.{layer}.hook_resid_post",
    "attn": "blocks.{layer}.hook_attn_out",
    "mlp": "blocks.{layer}.hook_mlp_out",
}
COLUMNS = ["probe accuracy", "shuffled-label control", "majority baseline"]
CONTROL_SHUFFLES = 5


@dataclass
class ProbeResult:
    name: str  # the row label: "embed", "layer 3", or the hook name
    hook: str
    accuracy: float  # held-out accuracy of the probe
    control_accuracy: float  # held-out accuracy of the same probe trained on shuffled labels
    control_std: float  # its standard deviation over the shuffles
    majority_baseline: float  # held-out accuracy of always answering the train majority class
    train_accuracy: float
    n_train: int
    n_test: int


@dataclass
class LinearProbe:
    weight: torch.Tensor  # [classes, width], on standardised features
    bias: torch.Tensor  # [classes]
    mean: torch.Tensor  # [width] the training features' mean
    scale: torch.Tensor  # [width] their standard deviation (1 where constant)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        standard = (features.float() - self.mean) / self.scale
        return (standard @ self.weight.T + self.bias).argmax(dim=-1)

    def accuracy(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        return float((self.predict(features) == labels).float().mean())


def fit_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int,
    l2: float = 1e-3,
    max_iterations: int = 200,
) -> LinearProbe:
    """Multinomial logistic regression on [n, width] features: mean cross-entropy plus
    `l2` * squared weight norm / 2, minimised full-batch by L-BFGS from zero (the problem is
    convex, so the result does not depend on a seed)."""
    features = features.float()
    mean = features.mean(dim=0)
    scale = features.std(dim=0, unbiased=False)
    scale = torch.where(scale > 1e-6, scale, torch.ones_like(scale))
    standard = (features - mean) / scale
    weight = torch.zeros(n_classes, features.shape[1], requires_grad=True)
    bias = torch.zeros(n_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iterations, line_search_fn="strong_wolfe"
    )

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = (
            F.cross_entropy(standard @ weight.T + bias, labels) + 0.5 * l2 * weight.square().sum()
        )
        value.backward()
        return value

    with torch.enable_grad():
        optimizer.step(loss)
    return LinearProbe(weight.detach(), bias.detach(), mean, scale)


def split_by_group(
    groups: torch.Tensor, train_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Example indices of a seeded train / test split that keeps every group on one side."""
    if not 0 < train_fraction < 1:
        raise UserError(f"the train fraction must be between 0 and 1, got {train_fraction}")
    names, group_of = groups.unique(return_inverse=True)
    if names.numel() < 2:
        raise UserError("a train / test split needs at least 2 examples (or groups)")
    order = torch.randperm(names.numel(), generator=torch.Generator().manual_seed(seed))
    n_train = min(max(1, round(train_fraction * names.numel())), names.numel() - 1)
    in_train = torch.zeros(names.numel(), dtype=torch.bool)
    in_train[order[:n_train]] = True
    train = in_train[group_of]
    return torch.nonzero(train).squeeze(1), torch.nonzero(~train).squeeze(1)


def probe_features(
    features: torch.Tensor,
    labels: torch.Tensor,
    train: torch.Tensor,
    test: torch.Tensor,
    seed: int = 0,
    l2: float = 1e-3,
    shuffles: int = CONTROL_SHUFFLES,
    name: str = "",
    hook: str = "",
) -> ProbeResult:
    """Fit a probe on the `train` rows, score it on the `test` rows, with both references
    (the control averaged over `shuffles` seeded shufflings of the training labels)."""
    n_classes = int(labels.max()) + 1
    train_labels = labels[train]
    if train_labels.unique().numel() < 2:
        raise UserError("the training split holds one class only: nothing to tell apart")
    if shuffles < 1:
        raise UserError(f"the control needs at least 1 shuffle, got {shuffles}")
    probe = fit_probe(features[train], train_labels, n_classes, l2)
    generator = torch.Generator().manual_seed(seed)
    controls = []
    for _ in range(shuffles):
        shuffled = train_labels[torch.randperm(len(train), generator=generator)]
        control = fit_probe(features[train], shuffled, n_classes, l2)
        controls.append(control.accuracy(features[test], labels[test]))
    majority = int(torch.bincount(train_labels, minlength=n_classes).argmax())
    return ProbeResult(
        name=name,
        hook=hook,
        accuracy=probe.accuracy(features[test], labels[test]),
        control_accuracy=sum(controls) / shuffles,
        control_std=float(torch.tensor(controls).std(unbiased=False)),
        majority_baseline=float((labels[test] == majority).float().mean()),
        train_accuracy=probe.accuracy(features[train], train_labels),
        n_train=len(train),
        n_test=len(test),
    )


def gather_rows(rows: torch.Tensor, positions: torch.Tensor, into: dict) -> HookFn:
    """A hook function that keeps each sequence's activation at its one position."""

    def keep(x: torch.Tensor, hook: HookPoint) -> None:
        if hook.name == "hook_pos_embed" or x.dim() < 2 or x.shape[0] != rows.numel():
            raise UserError(f"{hook.name} has no batch axis: it is the same for every prompt")
        into[hook.name].append(x[rows, positions].flatten(1).float().cpu())

    return keep


@torch.no_grad()
def activations_at(
    model: GPT,
    tokens: torch.Tensor,
    positions: torch.Tensor,
    hooks: list[str],
    batch_size: int = 64,
) -> dict[str, torch.Tensor]:
    """[n, width] activation of each hook at one position per sequence (tokens [n, T])."""
    names = model.resolve_hook_names(hooks)
    blocks = [int(name.split(".")[1]) for name in names if name.startswith("blocks.")]
    in_blocks = all(name.startswith(("blocks.", "hook_embed")) for name in names)
    stop = max(blocks, default=-1) + 1 if in_blocks else None  # run only the blocks needed
    device = next(model.parameters()).device
    collected: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for start in range(0, tokens.shape[0], batch_size):
        chunk = tokens[start : start + batch_size].to(device)
        rows = torch.arange(chunk.shape[0], device=device)
        keep = gather_rows(rows, positions[start : start + batch_size].to(device), collected)
        with model.edit(dict.fromkeys(names, keep)):
            model(chunk, stop_at_layer=stop)
    return {name: torch.cat(parts) for name, parts in collected.items()}


def probe_layers(
    model: GPT,
    tokens: torch.Tensor,
    positions: torch.Tensor,
    labels: torch.Tensor,
    hooks: list[str],
    train_fraction: float = 0.7,
    seed: int = 0,
    groups: torch.Tensor | None = None,
    names: list[str] | None = None,
    l2: float = 1e-3,
    shuffles: int = CONTROL_SHUFFLES,
    batch_size: int = 64,
    extra_width: int = 0,
) -> list[ProbeResult]:
    """One probe per hook for `labels` ([n] class ids 0..C-1) from the activation at
    `positions` ([n], one per sequence of `tokens` [n, T]). Examples with the same `groups`
    value stay in one split (default: every example its own group); `names` label the rows.
    `extra_width`: the widest hook that is not the model's own (SAE latents), for the memory
    check."""
    n = tokens.shape[0]
    positions, labels = torch.as_tensor(positions).long(), torch.as_tensor(labels).long()
    if positions.shape != (n,) or labels.shape != (n,):
        raise UserError(
            f"{n} sequences need one position and one label each, got {tuple(positions.shape)} "
            f"positions and {tuple(labels.shape)} labels"
        )
    if labels.numel() and labels.min() < 0:
        raise UserError("labels must be class numbers 0, 1, 2, ...")
    if ((positions < 0) | (positions >= tokens.shape[1])).any():
        raise UserError(f"positions must lie in 0..{tokens.shape[1] - 1}")
    groups = torch.arange(n) if groups is None else torch.as_tensor(groups)
    train, test = split_by_group(groups, train_fraction, seed)
    hooks = model.resolve_hook_names(hooks)
    names = names or hooks
    if len(names) != len(hooks):
        raise ValueError(f"{len(names)} row names for {len(hooks)} hooks")
    # Every hook's features of every example, and their standardised copy; one batch's pass.
    config = model.config
    width = max(config.d_model, config.d_attn, config.d_mlp, extra_width)
    features = 2 * len(hooks) * n * width * FLOAT_BYTES
    needed = features + forward_bytes(config, min(n, batch_size), tokens.shape[1])
    what = f"probing {len(hooks)} hooks on {n:,} prompts (--n)"
    require_memory(needed, what, str(next(model.parameters()).device))
    activations = activations_at(model, tokens, positions, hooks, batch_size)
    return [
        probe_features(activations[hook], labels, train, test, seed, l2, shuffles, name, hook)
        for name, hook in zip(names, hooks, strict=True)
    ]


def task_probe(
    run: Run,
    task: str,
    n: int = 256,
    seed: int = 0,
    kind: str = "resid",
    extra: dict[str, str] | None = None,
    extra_width: int = 0,
) -> list[ProbeResult]:
    """Which prompt of a task pair is this (A = 0, B = 1), read at each prompt's last token,
    after every layer (and from the token embedding first, for "resid"), then at the `extra`
    hooks (row name -> hook, e.g. a spliced SAE's latents). Pairs the tokenizer cannot use are
    left out: n_train + n_test counts the prompts probed."""
    if kind not in PROBE_KINDS:
        raise UserError(f"unknown probe site {kind!r} (choose from {', '.join(PROBE_KINDS)})")
    encoded = encode_pairs(task_pairs(task, "test", n, seed), run.tokenizer, run.model_config.n_ctx)
    batch = encoded.batch.trimmed()
    m = batch.n_pairs
    if m < 2:
        raise UserError(f"task {task} left {m} usable pairs for this tokenizer: too few to probe")
    layers = range(run.model_config.n_layer)
    hooks = [PROBE_KINDS[kind].format(layer=layer) for layer in layers]
    names = [f"layer {layer}" for layer in layers]
    if kind == "resid":
        hooks, names = ["hook_embed", *hooks], ["embed", *names]
    extra = extra or {}
    hooks, names = [*hooks, *extra.values()], [*names, *extra]
    return probe_layers(
        run.model,
        batch.tokens,
        batch.last,
        labels=torch.cat([torch.zeros(m), torch.ones(m)]).long(),
        hooks=hooks,
        seed=seed,
        groups=torch.arange(m).repeat(2),  # both prompts of a pair on the same side
        names=names,
        extra_width=extra_width,
    )


def probe_grid(results: list[ProbeResult], title: str, summary: dict | None = None) -> Grid:
    values = torch.tensor(
        [[r.accuracy, r.control_accuracy, r.majority_baseline] for r in results]
    ).reshape(len(results), len(COLUMNS))
    first = results[0] if results else None
    return Grid(
        title=title,
        values=values,
        rows=[r.name for r in results],
        columns=COLUMNS,
        row_axis="layer",
        column_axis="",
        value_label="held-out accuracy",
        diverging=False,
        summary={
            "n_train": first.n_train if first else 0,
            "n_test": first.n_test if first else 0,
            "train accuracy": [r.train_accuracy for r in results],
            "control std over shuffles": [r.control_std for r in results],
            **(summary or {}),
        },
    )
