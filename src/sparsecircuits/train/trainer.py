"""The training loop: a flat loop you can read in one sitting (spec section 2).

Each step: sample a batch, forward and backward, rescale the gradient to RMS 1, AdamW with the
sharkfin learning rate, then project every sparsified tensor onto its kept fraction. Batches
are drawn from a generator seeded by (seed, step, rank), so `--resume` replays the exact run.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from sparsecircuits.data import (
    CodeTokenizer,
    TokenizedCorpus,
    prepare_data,
    sample_batch,
    validation_batches,
)
from sparsecircuits.errors import UserError
from sparsecircuits.loading import TrainConfig
from sparsecircuits.loading.checkpoint import (
    latest_name,
    load_optimizer_state,
    load_run,
    save_checkpoint,
)
from sparsecircuits.loading.metrics_file import METRICS, keep_metrics_before, metrics_line
from sparsecircuits.model import GPT, GPTConfig, next_token_loss
from sparsecircuits.tasks import TaskBatch, encode_pairs, evaluate_task, task_pairs
from sparsecircuits.train import distributed
from sparsecircuits.train.config import check_eval_tasks
from sparsecircuits.train.plots import plot_loss_curve
from sparsecircuits.train.run_folder import claim_training_folder
from sparsecircuits.train.schedules import kept_fraction, sharkfin_learning_rate
from sparsecircuits.train.weight_sparsity import project_to_density

# Losses are read back from a GPU once every this many steps (and before every evaluation and
# checkpoint): each read waits for the device to finish all queued work.
SYNC_EVERY = 16


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    tokens: int
    val_loss: float
    tokens_per_second: float
    seconds: float


def train(
    model_config: GPTConfig,
    config: TrainConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    sync_every: int | None = None,
) -> TrainResult:
    """Train into `run_dir`. `sync_every`: steps whose losses are read back from the device
    at once (default: every step on a CPU, SYNC_EVERY on a GPU)."""
    run_dir = Path(run_dir)
    check_eval_tasks(config)
    group = distributed.start(config.device)
    try:
        # Only the main process writes the folder, so only it holds the claim.
        claim = (
            claim_training_folder(run_dir, model_config, config, resume)
            if group.is_main
            else contextlib.nullcontext()
        )
        with claim:
            setup = prepare_training(model_config, config, run_dir, group, resume, progress)
            if sync_every is None:
                sync_every = 1 if setup.device.type == "cpu" else SYNC_EVERY
            return _train(setup, config, run_dir, group, progress, sync_every)
    finally:
        distributed.finish(group)


@dataclass
class Setup:
    """Everything a training loop needs, built once before its first step."""

    device: torch.device
    per_rank_batch: int
    corpus: TokenizedCorpus
    model: GPT
    ddp_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    run_config: dict  # saved with every checkpoint
    eval_set: list  # fixed validation windows
    task_sets: dict[str, TaskBatch]  # --eval-tasks validation pairs (main process only)
    state: StepState  # where the run stands: after a resume, where it stopped


@dataclass
class StepState:
    """The run after a step: the record of metrics.jsonl and, without the per-step extras,
    the state saved with a checkpoint (what --resume starts from)."""

    step: int = 0
    tokens: int = 0
    train_loss: float = math.nan
    val_loss: float = math.nan  # the last evaluation's, until the next one
    density: float = 1.0
    lr: float = 0.0
    tokens_per_second: float = 0.0
    tasks: dict | None = None  # this step's task scores, if it evaluated

    def checkpoint_state(self) -> dict:
        return {
            "step": self.step,
            "tokens": self.tokens,
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "density": self.density,
        }

    def metrics_record(self, evaluated: bool) -> dict:
        record = {
            "step": self.step,
            "tokens": self.tokens,
            "loss": self.train_loss,
            "lr": self.lr,
            "density": self.density,
            "tokens_per_second": self.tokens_per_second,
        }
        if evaluated:
            record["val_loss"] = self.val_loss
            if self.tasks:
                record["tasks"] = self.tasks
        return record


def _train(
    setup: Setup,
    config: TrainConfig,
    run_dir: Path,
    group: distributed.ProcessGroup,
    progress: bool,
    sync_every: int,
) -> TrainResult:
    n_ctx = setup.model.config.n_ctx
    tokens_per_step = config.batch_size * n_ctx
    generator = torch.Generator()
    state = setup.state
    bar = progress_bar(config.steps, state.step, progress and group.is_main)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=setup.device.type == "cuda")
    pending: list[tuple[StepState, torch.Tensor]] = []  # steps whose loss is still on the device
    started = since = time.perf_counter()
    for step in range(state.step, config.steps):
        density, embedding_density, lr = schedule_at(step, config)
        for param_group in setup.optimizer.param_groups:
            param_group["lr"] = lr
        generator.manual_seed(config.seed * 1_000_003 + step * 7919 + group.rank)
        inputs, targets = sample_batch(setup.corpus.train, setup.per_rank_batch, n_ctx, generator)
        if setup.device.type == "cuda":  # a copy from pageable memory would wait for the GPU
            inputs, targets = inputs.pin_memory(), targets.pin_memory()
        loss = training_step(
            setup.model,
            setup.ddp_model,
            setup.optimizer,
            inputs.to(setup.device, non_blocking=True),
            targets.to(setup.device, non_blocking=True),
            (density, embedding_density),
            config,
            autocast,
            group,
        )
        done = step + 1
        state = replace(
            state, step=done, tokens=done * tokens_per_step, density=density, lr=lr, tasks=None
        )
        pending.append((state, loss))
        evaluated = done % config.eval_every == 0 or done == config.steps
        checkpoint = done % config.checkpoint_every == 0 or done == config.steps
        if not (evaluated or checkpoint or len(pending) >= sync_every):
            continue
        # The one read-back of these steps: a diverged loss stops the run before anything it
        # touched is evaluated or saved.
        states = read_losses(pending, run_dir, bar)
        speed = len(pending) * tokens_per_step / (time.perf_counter() - since)
        smoothed = (
            speed if not state.tokens_per_second else 0.9 * state.tokens_per_second + 0.1 * speed
        )
        states = [replace(each, tokens_per_second=smoothed) for each in states]
        pending = []
        if evaluated:
            states[-1] = evaluated_state(setup, states[-1], group)
        state = states[-1]
        if group.is_main:
            for each in states:
                record = each.metrics_record(each is state and evaluated)
                append_jsonl(run_dir / METRICS, record)
            if checkpoint:
                save_checkpoint(
                    run_dir,
                    setup.model,
                    setup.corpus.tokenizer,
                    setup.run_config,
                    state.checkpoint_state(),
                    setup.optimizer,
                )
        bar.set_postfix(
            progress_postfix(state.train_loss, state.val_loss, smoothed, density), refresh=False
        )
        bar.update(len(states))
        since = time.perf_counter()  # the speed counts steps, not evaluations and saves
    bar.close()
    if group.is_main:
        plot_loss_curve(run_dir / METRICS, run_dir / "loss.png")
    return TrainResult(
        run_dir,
        state.step,
        state.tokens,
        state.val_loss,
        state.tokens_per_second,
        time.perf_counter() - started,
    )


def read_losses(
    pending: list[tuple[StepState, torch.Tensor]], run_dir: Path, bar: tqdm
) -> list[StepState]:
    """The pending steps' states with their losses, read back in one transfer; a non-finite
    one stops training, naming its step (the last good checkpoint stays)."""
    values = torch.stack([loss for _, loss in pending]).float().tolist()
    for (state, _), value in zip(pending, values, strict=True):
        if not math.isfinite(value):
            bar.close()
            kept = latest_name(run_dir) or "none was written yet"
            raise UserError(
                f"loss became {value} at step {state.step - 1}; stopped, the last good "
                f"checkpoint is kept ({kept}). Try a lower --lr."
            )
    return [
        replace(state, train_loss=value) for (state, _), value in zip(pending, values, strict=True)
    ]


def prepare_training(
    model_config: GPTConfig,
    config: TrainConfig,
    run_dir: Path,
    group: distributed.ProcessGroup,
    resume: bool,
    progress: bool,
) -> Setup:
    """The device, corpus, model and optimizer (restored on --resume), and the fixed
    evaluation sets."""
    device = select_device(config.device, group)
    if config.batch_size % group.world_size:
        raise UserError(f"batch size {config.batch_size} does not split over {group.world_size}")
    per_rank_batch = config.batch_size // group.world_size
    # --resume before the first checkpoint (killed early) simply starts the run again.
    previous = load_run(run_dir) if resume and latest_name(run_dir) is not None else None
    corpus = load_corpus(config, previous, group, progress)
    if previous is not None and group.is_main:
        warn_if_corpus_changed(previous.config.get("data", {}), corpus)
    model_config.vocab_size = corpus.tokenizer.vocab_size
    torch.manual_seed(config.seed)
    model = GPT(model_config).to(device)
    optimizer = build_optimizer(model, config)
    state = StepState()
    if previous is not None:
        model.load_state_dict(previous.model.state_dict())
        load_optimizer_state(previous.path, optimizer)
        state = resumed_state(previous.state)
    ddp_model = model
    if group.distributed:
        ddp_model = DistributedDataParallel(
            model, device_ids=[group.local_rank] if device.type == "cuda" else None
        )
    if group.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        kept = keep_metrics_before(run_dir / METRICS, state.step)
        if kept.dropped_line is not None:
            print(
                f"warning: {run_dir / METRICS}: dropped its unfinished last line "
                f"(line {kept.dropped_line}, as a killed run leaves it)",
                file=sys.stderr,
            )
    return Setup(
        device=device,
        per_rank_batch=per_rank_batch,
        corpus=corpus,
        model=model,
        ddp_model=ddp_model,
        optimizer=optimizer,
        run_config=run_config(model_config, config, corpus),
        eval_set=validation_batches(
            corpus.val, per_rank_batch, model_config.n_ctx, config.eval_tokens
        ),
        task_sets=(  # only the main process evaluates
            task_eval_sets(config.eval_task_names, corpus.tokenizer, model_config.n_ctx)
            if group.is_main
            else {}
        ),
        state=state,
    )


def resumed_state(saved: dict) -> StepState:
    """A checkpoint's state; a resumed run keeps the last evaluation's loss until the next."""
    val_loss = saved.get("val_loss")
    return StepState(
        step=saved["step"],
        tokens=saved.get("tokens", 0),
        train_loss=saved.get("train_loss", math.nan),
        val_loss=math.nan if val_loss is None else val_loss,
        density=saved.get("density", 1.0),
    )


def run_config(model_config: GPTConfig, config: TrainConfig, corpus: TokenizedCorpus) -> dict:
    """The config.json of every checkpoint: model, training and what the corpus was."""
    return {
        "model": model_config.to_dict(),
        "train": config.to_dict(),
        "data": {
            "description": corpus.description,
            "train_tokens": int(len(corpus.train)),
            "val_tokens": int(len(corpus.val)),
            "skipped_files": corpus.skipped_files,
            "fingerprint": corpus.cache_dir.name,  # corpus and tokenizer, to notice changes
            **({"packages": corpus.packages} if corpus.packages else {}),
        },
    }


def schedule_at(step: int, config: TrainConfig) -> tuple[float, float | None, float]:
    """The kept fractions (block weights; embeddings and biases) and learning rate of a step."""
    density = kept_fraction(step, config.steps, config.density, config.anneal_end)
    embedding_density = config.embedding_density and kept_fraction(
        step, config.steps, config.embedding_density, config.anneal_end
    )
    lr = sharkfin_learning_rate(
        step, config.steps, config.lr, config.density, density, config.warmup_frac
    )
    return density, embedding_density, lr


def evaluated_state(setup: Setup, state: StepState, group: distributed.ProcessGroup) -> StepState:
    """The state with a fresh validation loss and task scores (the main process evaluates)."""
    if not group.is_main:
        return replace(state, val_loss=math.nan)
    scores = {name: evaluate_task(setup.model, pairs) for name, pairs in setup.task_sets.items()}
    tasks = {
        name: {key: score[key] for key in ("loss", "accuracy")} for name, score in scores.items()
    }
    return replace(state, val_loss=evaluate(setup.model, setup.eval_set, setup.device), tasks=tasks)


def progress_bar(total: int, initial: int, shown: bool) -> tqdm:
    return tqdm(
        total=total,
        initial=initial,
        unit="step",
        disable=not shown,
        dynamic_ncols=True,
        mininterval=1.0 if sys.stderr.isatty() else 15.0,
        file=sys.stderr,
    )


def training_step(
    model: GPT,
    ddp_model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    densities: tuple[float, float | None],
    config: TrainConfig,
    autocast: torch.autocast,
    group: distributed.ProcessGroup,
) -> torch.Tensor:
    """One update; returns the loss averaged over processes, as a tensor on the device: reading
    it back is the caller's choice (a read waits for the device to finish the step)."""
    with autocast:
        loss = next_token_loss(ddp_model(inputs), targets)
    loss.backward()
    rescale_gradients(model, config.grad_rms)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    density, embedding_density = densities  # of the block weights; of embeddings and biases
    project_to_density(model, density, config.min_per_neuron, embedding_density)
    return mean_over_ranks(loss.detach(), group)


def select_device(name: str, group: distributed.ProcessGroup) -> torch.device:
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for but no CUDA GPU is available")
        return torch.device("cuda", group.local_rank)
    if name != "cpu":
        raise UserError(f"unknown device {name!r} (use cpu or cuda)")
    if group.distributed:
        # Processes share the cores: give each its slice instead of oversubscribing.
        torch.set_num_threads(max(1, (torch.get_num_threads() or 1) // group.world_size))
    return torch.device("cpu")


def load_corpus(
    config: TrainConfig, previous, group: distributed.ProcessGroup, progress: bool
) -> TokenizedCorpus:
    """Rank 0 builds (or finds) the token cache first; the others then reuse it."""
    tokenizer = previous.tokenizer if previous is not None else None
    corpus = None
    if group.is_main:
        corpus = prepare_data(
            config.data,
            vocab_size=config.vocab_size,
            tokenizer=tokenizer,
            glob=config.data_glob,
            progress=progress,
        )
    distributed.barrier(group)
    if corpus is None:
        corpus = prepare_data(
            config.data,
            vocab_size=config.vocab_size,
            tokenizer=tokenizer,
            glob=config.data_glob,
            progress=False,
        )
    return corpus


def warn_if_corpus_changed(saved: dict, corpus: TokenizedCorpus) -> None:
    """A resumed run replays its batches only from the corpus it started on: say so if not."""
    before = saved.get("fingerprint")
    changed = (
        before != corpus.cache_dir.name
        if before is not None
        else saved.get("train_tokens") not in (None, int(len(corpus.train)))
    )
    if changed:
        print(
            "warning: the corpus (or its tokens) changed since this run started; the resumed "
            "run goes on with the new one and will not replay the original batches",
            file=sys.stderr,
        )


def build_optimizer(model: GPT, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with the paper's betas and eps; weight decay on matrices only."""
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [
            {"params": matrices, "weight_decay": config.weight_decay},
            {"params": vectors, "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(config.beta1, config.beta2),
        eps=config.adam_eps,
    )


@torch.no_grad()
def rescale_gradients(model: GPT, target_rms: float) -> None:
    """Normalise the whole gradient to RMS `target_rms` (the paper calls this essential)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    count = sum(g.numel() for g in grads)
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    rms = norm / math.sqrt(count)
    torch._foreach_mul_(grads, target_rms / rms.clamp_min(1e-12))


def mean_over_ranks(value: torch.Tensor, group: distributed.ProcessGroup) -> torch.Tensor:
    if group.distributed:
        value = value.clone()
        dist.all_reduce(value)
        value /= group.world_size
    return value


def task_eval_sets(
    names: list[str], tokenizer: CodeTokenizer, n_ctx: int, pairs: int = 256
) -> dict[str, TaskBatch]:
    """Validation pairs of the `--eval-tasks` tasks, encoded once, scored at every evaluation
    (validation, not test: these curves choose checkpoints and recipes)."""
    return {
        name: encode_pairs(task_pairs(name, "validation", pairs), tokenizer, n_ctx).batch
        for name in names
    }


@torch.no_grad()
def evaluate(model: GPT, batches: list, device: torch.device) -> float:
    """Mean validation loss (nats per token) over the fixed validation windows."""
    total, count = 0.0, 0
    for inputs, targets in batches:
        loss = model.loss(inputs.to(device), targets.to(device))
        total += float(loss) * targets.numel()
        count += targets.numel()
    return total / count


def progress_postfix(loss: float, val_loss: float, speed: float, density: float) -> dict:
    """What the progress bar shows after the step count; the validation loss only once there
    is one (NaN until the first evaluation, which would read as a diverged run)."""
    shown = {"loss": f"{loss:.3f}"}
    if math.isfinite(val_loss):
        shown["val"] = f"{val_loss:.3f}"
    return shown | {"tok_s": f"{speed:,.0f}", "density": f"{density:.4f}"}


def append_jsonl(path: Path, record: dict) -> None:
    # One write per line: a kill leaves at most the last line unfinished, which the reader
    # drops (loading/metrics_file.py).
    with open(path, "a") as handle:
        handle.write(metrics_line(record))
