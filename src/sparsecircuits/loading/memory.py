"""Memory a command will need, checked before it allocates anything: a size the machine cannot
hold ends in one line naming the flag and the estimate, not in an allocator's traceback (or a
machine that swaps itself to a halt).

The estimates count the big tensors (float32 activations of a forward pass, parameters and
optimizer state) and leave out the small ones: they tell a size that fits from one that cannot,
they do not predict the peak to the byte. What they are compared with is the memory free now:
MemAvailable (and a cgroup's limit, in a container) for the CPU, `torch.cuda.mem_get_info` for a
GPU; where neither can be read the check is skipped rather than guessed.

The standard library and `errors` only (torch when the device is a GPU), so any stage may
ask before it loads anything heavy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from sparsecircuits.errors import UserError

if TYPE_CHECKING:
    from sparsecircuits.model import GPTConfig

GIB = 2**30
FLOAT_BYTES = 4  # float32; bf16 autocast on a GPU needs less: the estimate errs on the safe side
CGROUP = Path("/sys/fs/cgroup")


def require_memory(bytes_needed: int, what: str, device: str = "cpu") -> None:
    """A UserError naming `what` (the flags that set the size, e.g. "--samples 1000000000") if
    `bytes_needed` is more than `device` has free; nothing where that cannot be told."""
    available = available_bytes(device)
    if available is not None and bytes_needed > available:
        place = "this machine" if device == "cpu" else device
        raise UserError(
            f"{what} needs about {gib(bytes_needed)} of memory, more than the {gib(available)} "
            f"free on {place}; choose a smaller value"
        )


def gib(n_bytes: int) -> str:
    value = n_bytes / GIB
    return f"{value:,.1f} GiB" if value < 1e9 else f"{value:.1e} GiB"


def available_bytes(device: str = "cpu") -> int | None:
    """Bytes free for new tensors on `device` ("cpu", "cuda", "cuda:N"); None if unknown."""
    if device == "cpu":
        return cpu_available_bytes()
    if device.startswith("cuda"):
        return gpu_free_bytes(device)
    return None


def cpu_available_bytes() -> int | None:
    free = [value for value in (meminfo_available(), cgroup_available()) if value is not None]
    if not free:
        try:
            free = [os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")]
        except (ValueError, OSError):
            return None
    return min(free)


def meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the kernel counts kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def cgroup_available() -> int | None:
    """What a container's memory limit (cgroup v2) leaves; None without one."""
    try:
        limit = (CGROUP / "memory.max").read_text().strip()
        used = int((CGROUP / "memory.current").read_text())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(0, int(limit) - used)


def gpu_free_bytes(device: str) -> int | None:
    import torch

    if not torch.cuda.is_available():
        return None  # the command says so itself when it moves the model there
    try:
        free, _ = torch.cuda.mem_get_info(torch.device(device))
    except (RuntimeError, ValueError, AssertionError):  # e.g. cuda:7 on a machine with one GPU
        return None
    return int(free)


# The estimates. Python integers: a product past 64 bits is just a large number here.


def parameter_count(config: GPTConfig) -> int:
    """The parameters of `GPT(config)`, counted from the config without building the model."""
    d, vocab = config.d_model, config.vocab_size
    norm = d * (2 if config.norm == "layer" else 1)
    attention = 4 * d * config.d_attn + 3 * config.d_attn + d
    attention += config.n_head if config.attention_sink else 0
    mlp = 2 * d * config.d_mlp + config.d_mlp + d
    count = vocab * d + config.n_layer * (2 * norm + attention + mlp) + norm + vocab
    count += 0 if config.tied_embeddings else d * vocab
    count += config.n_ctx * d if config.learned_positions else 0
    return count + (vocab * vocab if config.bigram_table else 0)


def forward_bytes(
    config: GPTConfig,
    rows: int,
    positions: int,
    *,
    backward: bool = False,
    logit_positions: int | None = None,
) -> int:
    """A forward pass of `rows` sequences of `positions` tokens: the residual stream and one
    block's intermediates (norms, queries, keys, values, every head's attention scores and
    probabilities, the MLP's hidden layer before and after its activation), every block's when
    `backward` keeps them for the gradient; and the vocabulary's logits at `logit_positions`
    per row (default all), with their softmax and gradient when `backward`."""
    scores = 2 * config.n_head * positions  # attention scores and probabilities, per query
    block = 6 * config.d_model + 4 * config.d_attn + 2 * config.d_mlp + scores
    blocks = config.n_layer if backward else 1
    logits = positions if logit_positions is None else logit_positions
    logit_copies = (3 if backward else 1) + (1 if config.bigram_table else 0)
    values = rows * positions * (2 * config.d_model + blocks * block)
    values += rows * logits * config.vocab_size * logit_copies
    return values * FLOAT_BYTES


def training_bytes(config: GPTConfig, batch_size: int) -> int:
    """Training with Adam: weights, gradients, two moments and the sparsity step's scratch (five
    copies of the parameters), plus a forward and backward pass of `batch_size` full windows."""
    return 5 * parameter_count(config) * FLOAT_BYTES + forward_bytes(
        config, batch_size, config.n_ctx, backward=True
    )
