"""Command-line training flags and the configs they set, both ways.

`build_train_configs` turns a preset and flags into configs (or checks them against a run's
saved configs on --resume); `train_command` turns a saved config back into the shortest
`sparsecircuits train` command that reproduces it.
"""

from __future__ import annotations

from pathlib import Path

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

# CLI flag -> (config, field): which dataclass field a training flag overrides.
TRAIN_FLAGS = {
    "density": ("train", "density"),
    "embedding_density": ("train", "embedding_density"),
    "afrac": ("model", "afrac"),
    "steps": ("train", "steps"),
    "seed": ("train", "seed"),
    "data": ("train", "data"),
    "data_glob": ("train", "data_glob"),
    "device": ("train", "device"),
    "lr": ("train", "lr"),
    "batch_size": ("train", "batch_size"),
    "anneal_end": ("train", "anneal_end"),
    "vocab_size": ("train", "vocab_size"),
    "eval_every": ("train", "eval_every"),
    "eval_tasks": ("train", "eval_tasks"),
    "checkpoint_every": ("train", "checkpoint_every"),
    "n_layer": ("model", "n_layer"),
    "d_model": ("model", "d_model"),
    "n_ctx": ("model", "n_ctx"),
    "d_head": ("model", "d_head"),
    "learned_positions": ("model", "learned_positions"),
    "bigram_table": ("model", "bigram_table"),
    "attention_sink": ("model", "attention_sink"),
}


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
        section, field = TRAIN_FLAGS[flag]
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
    for flag, (section, field) in TRAIN_FLAGS.items():
        value = config[section].get(field)
        if flag in RESUMABLE_FIELDS or value is None or value == base[section].get(field):
            continue
        option = "--" + flag.replace("_", "-")
        if isinstance(value, bool):
            words.append(option if value else option.replace("--", "--no-", 1))
        else:
            words += [option, str(value)]
    return " ".join([*words, "--out", out])
