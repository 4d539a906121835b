"""Packed weight files and `sparsecircuits export`: small, exact, reproducible model folders."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cli_runner import run_cli
from sparsecircuits.cli import cli
from sparsecircuits.errors import UserError
from sparsecircuits.loading import load_run
from sparsecircuits.loading.weights_file import load_weights, save_weights
from sparsecircuits.train.flags import build_train_configs, train_command


def test_packed_weights_round_trip_exactly_and_shrink(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    sparse = torch.randn(256, 256, generator=generator)
    sparse[torch.rand(256, 256, generator=generator) > 0.05] = 0
    weights = {
        "sparse": sparse,
        "dense": torch.randn(64, 8, generator=generator),
        "counts": torch.arange(10),
        "also.values": torch.zeros(3),  # a name that looks like a packed part
    }
    save_weights(weights, tmp_path / "packed.safetensors")
    loaded = load_weights(tmp_path / "packed.safetensors")
    assert loaded.keys() == weights.keys()
    for name, tensor in weights.items():
        assert torch.equal(loaded[name], tensor), name
    save_file({"sparse": sparse}, tmp_path / "plain.safetensors")
    packed_size = (tmp_path / "packed.safetensors").stat().st_size
    assert packed_size < (tmp_path / "plain.safetensors").stat().st_size / 5
    assert torch.equal(load_weights(tmp_path / "plain.safetensors")["sparse"], sparse)


def test_corrupt_packed_weights_are_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "packed.safetensors"
    save_weights({"w": torch.zeros(100).index_fill_(0, torch.tensor([3]), 1.0)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupt"):
        load_weights(path)


def test_train_command_reproduces_the_saved_config(tmp_path: Path) -> None:
    flags = {"d_model": 48, "afrac": 0.25, "steps": 30, "attention_sink": True, "n_ctx": 32}
    model, train = build_train_configs("tiny", tmp_path, False, None, dict(flags))
    config = {"model": model.to_dict(), "train": train.to_dict()}
    words = shlex.split(train_command(config, "runs/again"))
    assert words[:4] == ["sparsecircuits", "train", "--preset", "tiny"]
    assert "--attention-sink" in words and words[-2:] == ["--out", "runs/again"]
    context = cli.make_context("sparsecircuits", words[1:])
    train_context = cli.get_command(context, "train").make_context("train", words[2:])
    parsed = {k: v for k, v in train_context.params.items() if k in flags or k == "preset"}
    again_model, again_train = build_train_configs(
        parsed.pop("preset"), tmp_path, False, None, parsed
    )
    assert again_model == model and again_train == train


def test_export_writes_a_small_loadable_model_folder(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "models" / "tiny-sparse"
    result = run_cli("export", str(tiny_run), "--out", str(out))
    assert result.returncode == 0, result.stderr
    names = {path.name for path in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= names
    assert not any("optimizer" in name for name in names)
    original, exported = load_run(tiny_run), load_run(out)
    for (name, a), (_, b) in zip(
        original.model.state_dict().items(), exported.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert "sparsecircuits train --preset tiny" in (out / "README.md").read_text()
    again = run_cli("export", str(tiny_run), "--out", str(out))
    assert again.returncode == 2 and "not empty" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
