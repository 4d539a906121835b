"""Command-line training flags and the configs they set, both ways.

`TRAINING_FLAGS` declares each flag once; `training_options` turns it into click options,
`build_train_configs` turns a preset and flags into configs (or checks them against a run's
saved configs on --resume); `train_command` turns a saved config back into the shortest
`sparsecircuits train` command that reproduces it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

from sparsecircuits.cli_types import (
    FRACTION,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    SEED,
    UNIT_INTERVAL,
    count_at_least,
)
from sparsecircuits.errors import UserError
from sparsecircuits.loading import TrainConfig
from sparsecircuits.loading.checkpoint import read_json, resolve_checkpoint
from sparsecircuits.model import GPTConfig
from sparsecircuits.train.config import (
    check_eval_tasks,
    check_training_memory,
    preset_configs,
    steps_for_tokens,
)
from sparsecircuits.train.run_folder import RESUMABLE_FIELDS


@dataclass(frozen=True)
class Flag:
    """One training flag: the config field it sets and how the command line reads it."""

    section: str  # "model" (GPTConfig) or "train" (TrainConfig)
    field: str
    type: click.ParamType | None = None
    help: str | None = None
    switch: bool = False  # --name/--no-name

    @property
    def option(self) -> str:
        return "--" + self.field.replace("_", "-")


# Every flag that overrides a config field, declared once: the `train` command's options,
# build_train_configs and train_command all read this table. Defaults come from the preset.
TRAINING_FLAGS = (
    Flag("train", "density", FRACTION, "Kept fraction of weights, e.g. 0.0625; 1 = dense."),
    Flag(
        "train",
        "embedding_density",
        FRACTION,
        "Kept fraction of embeddings, unembedding and biases (default: --density).",
    ),
    Flag("model", "afrac", FRACTION, "AbsTopK activation kept fraction (default: off)."),
    Flag("train", "steps", POSITIVE_INT, "Optimizer steps."),
    Flag("train", "seed", SEED),
    Flag(
        "train",
        "data",
        help="stdlib (default), installed, a .manifest built by `corpus build`, a directory, "
        "a .txt/.jsonl file, or hf:NAME.",
    ),
    Flag("train", "data_glob", help="File pattern inside a --data directory (default **/*.py)."),
    Flag("train", "device", help="cpu or cuda (bf16 autocast)."),
    Flag("train", "lr", POSITIVE_FLOAT, "Peak learning rate."),
    Flag("train", "batch_size", POSITIVE_INT, "Sequences per step (over all processes)."),
    Flag("train", "anneal_end", UNIT_INTERVAL, "Fraction of training spent annealing L0."),
    Flag("train", "vocab_size", count_at_least(257), "BPE vocabulary size."),
    Flag("train", "eval_every", POSITIVE_INT, "Steps between validation losses."),
    Flag("train", "eval_tasks", help="Tasks (comma-separated) scored at each eval."),
    Flag("train", "checkpoint_every", POSITIVE_INT, "Steps between checkpoints."),
    Flag("model", "n_layer", POSITIVE_INT),
    Flag("model", "d_model", POSITIVE_INT),
    Flag("model", "n_ctx", count_at_least(2)),
    Flag("model", "d_head", POSITIVE_INT),
    Flag("model", "learned_positions", switch=True),
    Flag("model", "bigram_table", switch=True),
    Flag("model", "attention_sink", switch=True),
)
TRAIN_FLAGS = {flag.field: flag for flag in TRAINING_FLAGS}


def training_options(command: Callable) -> Callable:
    """Add every TRAINING_FLAGS option to a click command (each defaults to None: unset)."""
    for flag in reversed(TRAINING_FLAGS):
        if flag.switch:
            option = click.option(f"{flag.option}/--no-{flag.option[2:]}", default=None)
        else:
            option = click.option(flag.option, type=flag.type, help=flag.help)
        command = option(command)
    return command


def build_train_configs(
    preset: str | None, out: Path, resume: bool, tokens: int | None, flags: dict
) -> tuple[GPTConfig, TrainConfig]:
    """Preset + flags for a new run; the saved configs (checked against flags) on --resume."""
    if resume:
        saved = read_json(resolve_checkpoint(out) / "config.json")
        configs = {"model": saved["model"], "train": saved["train"]}
        if preset is not None and preset != configs["train"].get("preset"):
            raise UserError(
                f"config mismatch on --resume: preset was "
                f"{configs['train'].get('preset')}, now {preset}"
            )
    else:
        model_config, train_config = preset_configs(preset or "small")
        configs = {"model": model_config.to_dict(), "train": train_config.to_dict()}
    if tokens is not None:
        batch = flags.get("batch_size") or configs["train"]["batch_size"]
        n_ctx = flags.get("n_ctx") or configs["model"]["n_ctx"]
        if tokens < 1:
            raise UserError(f"tokens must be at least 1, got {tokens}")
        flags["steps"] = steps_for_tokens(tokens, batch, n_ctx)
    for flag, value in flags.items():
        if value is None:
            continue
        section, field = TRAIN_FLAGS[flag].section, flag
        current = configs[section][field]
        if resume and flag not in RESUMABLE_FIELDS and current != value:
            raise UserError(f"config mismatch on --resume: {flag} was {current}, now {value}")
        configs[section][field] = value
    if not resume:  # derived widths follow a new width (0: computed from it again)
        if flags.get("d_model") is not None:
            configs["model"]["d_mlp"] = 0  # 4 * d_model
        if flags.get("d_model") is not None or flags.get("d_head") is not None:
            configs["model"]["n_head"] = 0  # d_model // d_head
    train_config = TrainConfig.from_dict(configs["train"])
    model_config = GPTConfig.from_dict(configs["model"])
    check_eval_tasks(train_config)
    check_training_memory(model_config, train_config)
    return model_config, train_config


def train_command(config: dict, out: str) -> str:
    """The `sparsecircuits train` command line that reproduces a run's saved config."""
    preset = config["train"].get("preset", "custom")
    base_model, base_train = preset_configs(preset if preset != "custom" else "small")
    base = {"model": base_model.to_dict(), "train": base_train.to_dict()}
    words = ["sparsecircuits", "train", "--preset", base["train"]["preset"]]
    for flag in TRAINING_FLAGS:
        value = config[flag.section].get(flag.field)
        unchanged = value is None or value == base[flag.section].get(flag.field)
        if flag.field in RESUMABLE_FIELDS or unchanged:
            continue
        if isinstance(value, bool):
            words.append(flag.option if value else flag.option.replace("--", "--no-", 1))
        else:
            words += [flag.option, str(value)]
    return " ".join([*words, "--out", out])
