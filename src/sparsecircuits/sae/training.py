"""Training an SAE on activations streamed from its model: no activation cache on disk.

The stream walks the run's training split in a seeded shuffled order of windows
(loading.activations); a buffer holds `buffer_windows` windows' activations at a time, is
shuffled with a seed of its own, and is cut into batches. A checkpoint is written after every
buffer, holding where the stream stands, so `--resume` goes on exactly as an unbroken run
would. Before the first step the activations are scaled so their mean squared norm is d_in
(one sparsity coefficient means the same on every hook) and b_dec starts at their mean.
Latents that have not fired for `dead_after_tokens` tokens are dead; TopK and BatchTopK give
them an auxiliary loss (AuxK: the dead latents' top k reconstruct the residual error).
"""

from __future__ import annotations

import math
import re
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from sparsecircuits.data import TokenizedCorpus
from sparsecircuits.errors import UserError
from sparsecircuits.files import (
    atomic_folder,
    atomic_path,
    claim_run_folder,
    json_text,
    write_json_atomic,
    write_text_atomic,
)
from sparsecircuits.loading import Run
from sparsecircuits.loading.activations import iter_activations, run_corpus
from sparsecircuits.loading.checkpoint import read_safetensors
from sparsecircuits.sae.architectures import build_sae
from sparsecircuits.sae.base import SparseAutoencoder
from sparsecircuits.sae.config import SAEConfig
from sparsecircuits.sae.files import CONFIG, WEIGHTS, load_sae, sae_tensors, write_sae_files
from sparsecircuits.sae.metrics import reconstruction_metrics
from sparsecircuits.sae.topk import keep_top_k
from sparsecircuits.validation import load_json

STATE = "train_state.json"
OPTIMIZER = "optimizer.safetensors"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
LATEST = "LATEST"


@dataclass
class SAETrainConfig:
    tokens: int = 1_000_000  # activations to train on
    batch_size: int = 4096  # activations per step
    lr: float = 4e-4
    buffer_windows: int = 32  # windows of the model's context per shuffled buffer
    seed: int = 0
    dead_after_tokens: int = 200_000
    aux_coef: float = 1 / 32
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("tokens", "batch_size", "buffer_windows", "dead_after_tokens"):
            if getattr(self, name) < 1:
                raise UserError(f"SAE training {name} must be at least 1")
        if not self.lr > 0:
            raise UserError(f"SAE learning rate must be positive, got {self.lr}")


def train_sae(
    run: Run,
    config: SAEConfig,
    train: SAETrainConfig,
    out: Path,
    resume: bool = False,
    progress: bool = True,
) -> dict:
    """Train into the folder `out` (config.json + sae.safetensors, the training state beside
    them); returns the last buffer's metrics."""
    hooks = [config.hook] + ([config.out_hook] if config.is_transcoder else [])
    run.model.resolve_hook_names(hooks)  # an unknown hook: one line with close matches
    identity = {
        "sae": config.to_dict() | {"input_scale": 0, "output_scale": 0},
        "train": asdict(train),
    }
    with claim_run_folder(Path(out), "sae-train", identity):
        return _train(run, config, train, Path(out), hooks, resume, progress)


def _train(
    run: Run,
    config: SAEConfig,
    train: SAETrainConfig,
    out: Path,
    hooks: list[str],
    resume: bool,
    progress: bool,
) -> dict:
    device = torch.device(train.device)
    corpus = run_corpus(run)
    n_ctx = run.model_config.n_ctx
    fills = math.ceil(train.tokens / (train.buffer_windows * n_ctx))
    checkpoint = latest_checkpoint(out)
    if checkpoint is not None and not resume:
        raise UserError(
            f"{out} already holds an SAE training: pass --resume, or choose another --out"
        )
    if checkpoint is not None and resume and not (checkpoint / STATE).is_file():
        raise UserError(f"{checkpoint} has no {STATE}: not a checkpoint of an SAE training")
    if checkpoint is None:
        first = next(buffers(run, hooks, train, corpus, 0, 1))
        config = scaled_config(config, run, first)
        with torch.random.fork_rng(devices=[]):  # the same seed, the same initial SAE
            torch.manual_seed(train.seed)
            sae = build_sae(config).to(device)
        with torch.no_grad():
            sae.b_dec.copy_((first[1] / config.output_scale).mean(dim=0))
        optimizer = torch.optim.Adam(sae.parameters(), lr=train.lr)
        state = {"fill": 0, "step": 0, "tokens": 0, "since_fired": [0] * config.d_sae}
        state["history"] = []
    else:
        sae = load_sae(checkpoint).to(device)
        config = sae.config
        optimizer = torch.optim.Adam(sae.parameters(), lr=train.lr)
        optimizer.load_state_dict(optimizer_state(checkpoint, optimizer))
        state = load_json(checkpoint / STATE, dict, "SAE training state")
    since_fired = torch.tensor(state["since_fired"], dtype=torch.long, device=device)
    bar = tqdm(
        total=fills, initial=state["fill"], unit="buffer", disable=not progress, file=sys.stderr
    )
    summary: dict = {}
    started = time.perf_counter()
    for fill, (x_all, y_all) in enumerate(
        buffers(run, hooks, train, corpus, state["fill"], fills), start=state["fill"]
    ):
        order = torch.randperm(
            len(x_all), generator=torch.Generator().manual_seed(train.seed * 7919 + fill)
        )
        for batch in order.split(train.batch_size):
            x, y = x_all[batch].to(device), y_all[batch].to(device)
            losses = sae.losses(x, y)
            dead = since_fired >= train.dead_after_tokens
            loss = losses["loss"] + train.aux_coef * aux_loss(sae, x, y, losses["f"], dead)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if config.arch in ("topk", "batchtopk"):
                sae.normalise_decoder()
            fired = (losses["f"] != 0).any(dim=0)
            since_fired = torch.where(fired, 0, since_fired + len(batch))
            state["step"] += 1
        state["tokens"] += len(x_all)
        with torch.no_grad():
            x_hat, f = sae(x_all[: train.batch_size].to(device))
        summary = reconstruction_metrics(y_all[: train.batch_size].to(device), x_hat, f)
        dead = float((since_fired >= train.dead_after_tokens).double().mean())
        summary |= {"buffer": fill + 1, "tokens_trained": state["tokens"], "dead_latents": dead}
        state |= {"fill": fill + 1, "since_fired": since_fired.tolist()}
        state["history"] = [*state["history"], summary]
        save_training(out, sae, optimizer, state)
        shown = {"l0": f"{summary['l0']:.1f}", "ev": f"{summary['explained_variance']:.3f}"}
        bar.set_postfix(shown | {"dead": f"{dead:.2f}"}, refresh=False)
        bar.update(1)
    bar.close()
    summary["seconds"] = time.perf_counter() - started
    return summary


def buffers(
    run: Run,
    hooks: list[str],
    train: SAETrainConfig,
    corpus: TokenizedCorpus,
    first_fill: int,
    fills: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(input, target) activations of each buffer from `first_fill` on, [tokens, width] on the
    CPU; the target is the input for an SAE, the second hook's activations for a transcoder."""
    n_ctx = run.model_config.n_ctx
    for fill in range(first_fill, fills):
        inputs, targets = [], []
        stream = iter_activations(
            run,
            hooks,
            train.buffer_windows * n_ctx,
            split="train",
            order="shuffled",
            seed=train.seed,
            start=fill * train.buffer_windows,
            corpus=corpus,
        )
        for batch in stream:
            inputs.append(batch.activations[hooks[0]].flatten(0, -2).float())
            targets.append(batch.activations[hooks[-1]].flatten(0, -2).float())
        if not inputs:
            raise UserError(
                f"the training split ran out of windows after {fill} buffers: ask for fewer tokens"
            )
        yield torch.cat(inputs), torch.cat(targets)


def scaled_config(
    config: SAEConfig, run: Run, first: tuple[torch.Tensor, torch.Tensor]
) -> SAEConfig:
    """The config with the input and output scales measured on the first buffer and the
    model it belongs to recorded."""
    x, y = first
    if x.shape[-1] != config.d_in or y.shape[-1] != config.d_out:
        raise UserError(
            f"the hooks are {x.shape[-1]} and {y.shape[-1]} wide, the SAE expects {config.d_in} "
            f"and {config.d_out}"
        )

    def scale(values: torch.Tensor) -> float:
        return float(values.square().sum(dim=-1).mean().sqrt() / math.sqrt(values.shape[-1])) or 1.0

    fields = config.to_dict() | {
        "input_scale": scale(x),
        "output_scale": scale(y),
        "model_sha256": run.weights_sha256,
        "model_path": str(run.path),
    }
    return SAEConfig.from_dict(fields)


def aux_loss(
    sae: SparseAutoencoder, x: torch.Tensor, y: torch.Tensor, f: torch.Tensor, dead: torch.Tensor
) -> torch.Tensor:
    """AuxK (Gao et al. 2024) for TopK and BatchTopK: the dead latents' top k_aux (half the
    input width) reconstruct the residual error, normalised by its variance."""
    n_dead = int(dead.sum())
    if sae.config.arch not in ("topk", "batchtopk") or n_dead == 0:
        return f.new_zeros(())
    pre = sae.pre_activations(x).masked_fill(~dead, -math.inf)
    chosen = keep_top_k(torch.relu(pre).nan_to_num(0.0), min(n_dead, max(1, sae.config.d_in // 2)))
    residual = (y / sae.config.output_scale - (f @ sae.W_dec + sae.b_dec)).detach()
    estimate = chosen @ sae.W_dec
    variance = (residual - residual.mean(dim=0)).square().sum(dim=-1).mean().clamp_min(1e-12)
    return (residual - estimate).square().sum(dim=-1).mean() / variance


def save_training(
    out: Path, sae: SparseAutoencoder, optimizer: torch.optim.Optimizer, state: dict
) -> None:
    """A checkpoint folder for this buffer (SAE, optimizer, state), written whole, then LATEST
    pointing at it, then the SAE itself at the top of `out` for users and the metrics."""
    name = f"buffer-{state['fill']:06d}"
    checkpoints = out / CHECKPOINTS
    checkpoints.mkdir(exist_ok=True)
    with atomic_folder(checkpoints / name) as staging:
        write_sae_files(sae, staging)
        flat = {
            f"{index}.{key}": tensor.detach().cpu().contiguous()
            for index, values in optimizer.state_dict()["state"].items()
            for key, tensor in values.items()
        }
        save_file(flat, staging / OPTIMIZER)
        write_json_atomic(staging / STATE, state)
    write_text_atomic(out / LATEST, name + "\n")
    for old in sorted(checkpoints.glob("buffer-*"))[:-1]:
        shutil.rmtree(old, ignore_errors=True)
    with atomic_path(out / WEIGHTS) as path:  # the SAE a user loads from `out`
        save_file(sae_tensors(sae), path)
    write_json_atomic(out / CONFIG, sae.config.to_dict())
    write_text_atomic(
        out / METRICS, "".join(json_text(r, indent=None) + "\n" for r in state["history"])
    )


def latest_checkpoint(out: Path) -> Path | None:
    if not (out / LATEST).is_file():
        return None
    name = (out / LATEST).read_text().strip()
    if not re.fullmatch(r"buffer-\d{6}", name) or not (out / CHECKPOINTS / name).is_dir():
        raise UserError(f"{out / LATEST} names no checkpoint of this folder ({name[:40]!r})")
    return out / CHECKPOINTS / name


def optimizer_state(folder: Path, optimizer: torch.optim.Optimizer) -> dict:
    restored: dict = {}
    for key, tensor in read_safetensors(folder / OPTIMIZER).items():
        index, name = key.split(".", 1)
        restored.setdefault(int(index), {})[name] = tensor
    return optimizer.state_dict() | {"state": restored}
