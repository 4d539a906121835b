"""Sizes without bounds: counts and seeds have ranges at the CLI, and a size that fits a range
but not in memory is refused, in one line naming its flag, before anything is allocated (so
these tests are instant however large the numbers)."""

from __future__ import annotations

import random
from pathlib import Path

import click
import numpy as np
import pytest
import torch

from cli_runner import run_in_process
from sparsecircuits.cli import cli
from sparsecircuits.cli_types import LARGEST_COUNT, LARGEST_SEED, MAX_PAIRS
from sparsecircuits.errors import UserError
from sparsecircuits.loading import memory
from sparsecircuits.loading.memory import GIB, parameter_count, require_memory, training_bytes
from sparsecircuits.model import GPT, GPTConfig
from sparsecircuits.train.config import preset_configs
from sparsecircuits.train.flags import build_train_configs
from test_hardening import one_line_error

REFERENCE = Path(__file__).parent.parent / "models" / "reference-sparse"
TASK = ["--task", "single_double_quote"]
# The commands of the toolkit and of training, each with small sizes and an --out where needed.
MY_COMMANDS = {
    "patch": ["patch", str(REFERENCE), *TASK, "--n", "4"],
    "trace": ["trace", str(REFERENCE), *TASK, "--n", "4", "--kind", "resid"],
    "probe": ["probe", str(REFERENCE), *TASK, "--n", "8"],
    "lens": ["lens", str(REFERENCE), *TASK, "--n", "4"],
    "heads": ["heads", str(REFERENCE), "--sequences", "2"],
    "tuned-lens": ["tuned-lens", str(REFERENCE), "--steps", "1", "--quiet"],
    "train": ["train", "--preset", "tiny"],
}
NEEDS_OUT = {"patch", "trace", "probe", "lens", "heads", "train"}


def command_line(name: str, tmp_path: Path, *flags: str) -> list[str]:
    out = ["--out", str(tmp_path / "out")] if name in NEEDS_OUT else []
    return [*MY_COMMANDS[name], *flags, *out]


def assert_nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "out").exists()
    assert not list(REFERENCE.glob("tuned_lens*"))


HUGE = [10**9, 10**18, 2**64, 2**70]


@pytest.mark.parametrize(
    ("name", "flag"),
    [
        ("trace", "--samples"),
        ("heads", "--sequences"),
        ("tuned-lens", "--tokens"),
        ("train", "--d-model"),
        ("train", "--batch-size"),
        ("train", "--n-layer"),
        ("train", "--n-ctx"),
        ("train", "--vocab-size"),
    ],
)
@pytest.mark.parametrize("size", HUGE)
def test_a_huge_size_is_one_line_naming_its_flag(tmp_path, name, flag, size):
    result = run_in_process(*command_line(name, tmp_path, flag, str(size)))
    one_line_error(result, flag)
    if size > LARGEST_COUNT:
        assert "is not in the range" in result.stderr
    else:
        assert "GiB of memory" in result.stderr
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize(
    ("name", "flag"),
    [
        ("patch", "--last"),
        ("trace", "--last"),
        ("heads", "--seq-len"),
        ("tuned-lens", "--steps"),
        ("tuned-lens", "--held-out-tokens"),
        ("train", "--steps"),
        ("train", "--tokens"),
        ("train", "--eval-every"),
        ("train", "--checkpoint-every"),
        ("train", "--d-head"),
    ],
)
def test_counts_past_64_bits_are_refused_at_the_flag(tmp_path, name, flag):
    result = run_in_process(*command_line(name, tmp_path, flag, str(2**70)))
    one_line_error(result, flag, "is not in the range")
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("name", ["patch", "trace", "probe", "lens"])
@pytest.mark.parametrize("pairs", [MAX_PAIRS + 1, 10**12, 2**70])
def test_pair_counts_are_bounded(tmp_path, name, pairs):
    result = run_in_process(*command_line(name, tmp_path, "--n", str(pairs)))
    one_line_error(result, "--n", "is not in the range")


def test_a_head_width_past_the_model_width_is_one_line(tmp_path):
    # --d-head sets how the preset's width splits into heads (n_head follows it).
    result = run_in_process(*command_line("train", tmp_path, "--d-head", str(10**18)))
    one_line_error(result, "not a multiple of d_head")
    assert_nothing_written(tmp_path)


def test_the_head_count_follows_a_new_width():
    model, _ = build_train_configs("small", Path("unused"), False, None, {"d_model": 256})
    assert (model.n_head, model.d_attn, model.d_mlp) == (16, 256, 1024)
    # The shipped model its README says was trained with --d-model 48 has 3 heads of 16.
    shipped = GPTConfig.load(REFERENCE.parent / "reference-dense-matched" / "config.json")
    flags = {"d_model": 48, "n_ctx": 128}
    model, _ = build_train_configs("small", Path("unused"), False, None, flags)
    assert (model.n_head, model.d_attn, model.d_mlp) == (shipped.n_head, shipped.d_attn, 192)
    model, _ = build_train_configs("small", Path("unused"), False, None, {"d_head": 32})
    assert (model.n_head, model.d_attn) == (4, 128)


# --- seeds ------------------------------------------------------------------------------------


def test_every_seed_of_the_toolkit_and_training_stops_at_the_largest_seed():
    context = click.Context(cli)
    for name in [*MY_COMMANDS, "attention"]:
        command = cli.get_command(context, name)
        seeds = [param for param in command.params if "--seed" in param.opts]
        for param in seeds:  # attention draws nothing at random: it has none
            assert (param.type.min, param.type.max) == (0, LARGEST_SEED), name
        assert seeds or name == "attention"


@pytest.mark.parametrize("name", list(MY_COMMANDS))
@pytest.mark.parametrize("seed", [2**32, 2**64, 2**100])
def test_a_seed_past_the_range_is_one_line(tmp_path, name, seed):
    result = run_in_process(*command_line(name, tmp_path, "--seed", str(seed)))
    one_line_error(result, "--seed", "is not in the range")
    assert_nothing_written(tmp_path)


def test_the_largest_seed_is_one_every_generator_takes():
    torch.manual_seed(LARGEST_SEED)
    np.random.seed(LARGEST_SEED)  # 32 bits: the narrowest of the three
    random.seed(LARGEST_SEED)
    # The trainer's per-step seed, at a step count no run reaches, still fits torch's 64 bits.
    torch.Generator().manual_seed(LARGEST_SEED * 1_000_003 + 10**14 * 7919 + 63)
    with pytest.raises((RuntimeError, ValueError)):
        np.random.seed(LARGEST_SEED + 1)


def test_the_largest_seed_runs(tmp_path):
    result = run_in_process(*command_line("heads", tmp_path, "--seed", str(LARGEST_SEED)))
    assert result.returncode == 0, result.stderr


# --- the memory check itself ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "flag"),
    [
        ("patch", "--n"),
        ("trace", "--samples"),
        ("probe", "--n"),
        ("lens", "--n"),
        ("heads", "--sequences"),
        ("tuned-lens", "--tokens"),
        ("train", "--batch-size"),
    ],
)
def test_every_command_checks_its_sizes_before_allocating(tmp_path, monkeypatch, name, flag):
    # A machine with 64 KiB free: even small sizes are refused, naming what sets them.
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 2**16)
    result = run_in_process(*command_line(name, tmp_path))
    one_line_error(result, flag, "GiB of memory", "free on this machine")
    assert_nothing_written(tmp_path)


def test_require_memory_names_the_estimate_and_what_is_free(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 2 * GIB)
    require_memory(GIB, "--things 3")
    with pytest.raises(UserError, match=r"^--things 9 needs about 3.0 GiB .* the 2.0 GiB free"):
        require_memory(3 * GIB, "--things 9")
    with pytest.raises(UserError, match=r"1.0e\+12 GiB"):
        require_memory(10**12 * GIB, "--things 10**12")


def test_cpu_memory_is_what_the_kernel_and_a_container_limit_leave(tmp_path, monkeypatch):
    assert memory.cpu_available_bytes() > 0
    (tmp_path / "memory.max").write_text(f"{3 * GIB}\n")
    (tmp_path / "memory.current").write_text(f"{GIB}\n")
    monkeypatch.setattr(memory, "CGROUP", tmp_path)
    assert memory.cgroup_available() == 2 * GIB
    assert memory.cpu_available_bytes() <= 2 * GIB
    (tmp_path / "memory.max").write_text("max\n")
    assert memory.cgroup_available() is None


def test_a_gpu_is_measured_by_its_own_free_memory(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (GIB, 2 * GIB))
    assert memory.available_bytes("cuda") == memory.available_bytes("cuda:0") == GIB
    with pytest.raises(UserError, match="free on cuda:1"):
        require_memory(2 * GIB, "--batch-size 64", "cuda:1")


def test_without_a_gpu_the_gpu_check_is_left_to_the_command(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert memory.available_bytes("cuda") is None
    require_memory(10**30, "--anything", "cuda")  # the trainer says "no CUDA GPU" itself
    assert memory.available_bytes("mps") is None


def test_the_paper_preset_fits_a_gpu_and_a_laptop_while_a_huge_batch_does_not(monkeypatch):
    model, train = preset_configs("paper")
    assert training_bytes(model, train.batch_size) < 12 * GIB
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (139 * GIB, 141 * GIB))
    build_train_configs("paper", Path("unused"), False, None, {})
    with pytest.raises(UserError, match="--batch-size 100000"):
        build_train_configs("paper", Path("unused"), False, None, {"batch_size": 100_000})


def test_under_torchrun_each_process_counts_its_share_of_the_batch(monkeypatch):
    model, _ = preset_configs("paper")
    free = training_bytes(model, 64) + GIB
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, free))
    with pytest.raises(UserError):
        build_train_configs("paper", Path("unused"), False, None, {"batch_size": 512})
    monkeypatch.setenv("WORLD_SIZE", "8")
    build_train_configs("paper", Path("unused"), False, None, {"batch_size": 512})


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"learned_positions": True, "bigram_table": True, "attention_sink": True},
        {"norm": "layer", "tied_embeddings": True, "n_head": 3, "d_mlp": 40},
    ],
)
def test_the_parameter_count_is_the_models(options):
    config = GPTConfig(vocab_size=300, n_layer=2, d_model=32, n_ctx=16, d_head=8, **options)
    assert parameter_count(config) == sum(p.numel() for p in GPT(config).parameters())
