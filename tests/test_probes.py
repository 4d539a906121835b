"""Linear probes: a property written along one direction is read back from held-out examples,
a shuffled-label control is not, and grouped examples never straddle the split."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import sparsecircuits
from cli_runner import run_in_process as run_cli
from sparsecircuits.errors import UserError
from sparsecircuits.interp.probes import (
    COLUMNS,
    probe_features,
    probe_grid,
    probe_layers,
    split_by_group,
    task_probe,
)
from sparsecircuits.model import GPT, GPTConfig


def encoded_along_directions(n: int, width: int, n_classes: int, seed: int = 0):  # noqa: ANN201
    """Gaussian features in which class c adds 4 units along its own direction."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(n_classes, (n,), generator=generator)
    directions = torch.linalg.qr(torch.randn(width, n_classes, generator=generator))[0].T
    features = torch.randn(n, width, generator=generator) + 4.0 * directions[labels]
    return features, labels


@pytest.mark.parametrize("n_classes", [2, 3])
def test_a_linearly_encoded_label_is_read_and_the_control_stays_at_chance(n_classes: int) -> None:
    features, labels = encoded_along_directions(600, 24, n_classes)
    train, test = split_by_group(torch.arange(600), 0.7, seed=0)
    result = probe_features(features, labels, train, test, seed=0)
    chance = 1 / n_classes
    assert result.accuracy >= 0.97 and result.train_accuracy >= 0.97
    assert abs(result.control_accuracy - chance) < 0.15
    assert abs(result.majority_baseline - chance) < 0.15
    assert (result.n_train, result.n_test) == (420, 180)


def test_features_without_the_label_are_not_read() -> None:
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(400, 16, generator=generator)
    labels = torch.randint(2, (400,), generator=generator)
    train, test = split_by_group(torch.arange(400), 0.7, seed=1)
    assert abs(probe_features(features, labels, train, test).accuracy - 0.5) < 0.15


def test_the_split_keeps_every_group_on_one_side_and_is_seeded() -> None:
    groups = torch.arange(50).repeat(2)  # the A and B prompts of 50 pairs
    train, test = split_by_group(groups, 0.7, seed=3)
    assert sorted(torch.cat([train, test]).tolist()) == list(range(100))
    assert not set(groups[train].tolist()) & set(groups[test].tolist())
    assert len(set(groups[train].tolist())) == 35
    again = split_by_group(groups, 0.7, seed=3)
    assert torch.equal(train, again[0]) and torch.equal(test, again[1])
    assert not torch.equal(train, split_by_group(groups, 0.7, seed=4)[0])


def test_probe_layers_reads_the_token_from_its_embedding() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, d_model=32, d_head=16, n_ctx=16, vocab_size=20)).eval()
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(20, (300, 8), generator=generator)
    positions = torch.randint(8, (300,), generator=generator)
    labels = tokens[torch.arange(300), positions] % 2  # a property of the token at the position
    hooks = ["hook_embed", "blocks.*.hook_resid_post"]
    results = probe_layers(model, tokens, positions, labels, hooks, batch_size=64)
    assert [r.hook for r in results] == [
        "hook_embed",
        "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_post",
    ]
    assert results[0].accuracy >= 0.97
    assert abs(results[0].control_accuracy - 0.5) < 0.2
    grid = probe_grid(results, "parity of the token")
    assert grid.columns == COLUMNS and grid.values.shape == (3, 3)
    assert grid.summary["n_train"] == 210 and grid.summary["n_test"] == 90


def test_bad_probe_input_is_a_user_error() -> None:
    model = GPT(GPTConfig(n_layer=1, d_model=16, d_head=8, n_ctx=8, vocab_size=10)).eval()
    tokens = torch.zeros(10, 4, dtype=torch.long)
    with pytest.raises(UserError, match="one position and one label"):
        probe_layers(model, tokens, torch.zeros(9), torch.zeros(10), ["hook_embed"])
    with pytest.raises(UserError, match="positions must lie"):
        probe_layers(model, tokens, torch.full((10,), 4), torch.zeros(10), ["hook_embed"])
    with pytest.raises(UserError, match="one class only"):
        probe_layers(model, tokens, torch.zeros(10), torch.zeros(10), ["hook_embed"])


def test_task_probe_gives_one_result_per_layer(tiny_run: Path) -> None:
    run = sparsecircuits.load(tiny_run)
    results = task_probe(run, "single_double_quote", n=64, seed=0)
    assert [r.name for r in results] == ["embed", "layer 0", "layer 1"]
    assert results[1].hook == "blocks.0.hook_resid_post"
    for result in results:
        for value in (result.accuracy, result.control_accuracy, result.majority_baseline):
            assert 0 <= value <= 1
        assert result.n_train % 2 == 0 and result.n_test % 2 == 0  # whole pairs on each side
        assert result.n_train > result.n_test > 0


def test_probe_command_prints_a_table_and_writes_the_figure(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "probe"
    arguments = ["--task", "single_double_quote", "--out", str(out), "--n", "64"]
    result = run_cli("probe", str(tiny_run), *arguments)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if re.match(r"(embed|layer \d) ", line)]
    assert len(rows) == 3
    grid = json.loads((out / "single_double_quote-probe-resid.json").read_text())
    assert grid["columns"] == COLUMNS and grid["rows"] == ["embed", "layer 0", "layer 1"]
    assert grid["n_train"] > 0 and grid["n_test"] > 0
    assert (out / "single_double_quote-probe-resid.png").is_file()


def test_probe_command_refuses_an_unknown_task_in_one_line(tiny_run: Path, tmp_path: Path) -> None:
    result = run_cli("probe", str(tiny_run), "--task", "no_such_task", "--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "unknown task" in result.stderr
