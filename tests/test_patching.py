"""Activation and attribution patching and causal tracing: exact properties that hold for
any model, agreement between the two estimates, and the commands' files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cli_runner import run_in_process as run_cli
from sparsecircuits.interp.figures import Grid, write_grid
from sparsecircuits.interp.patching import (
    attribution_effects,
    causal_trace,
    patch_scan,
    patching,
)
from sparsecircuits.interp.task_pairs import shared_positions
from sparsecircuits.model import GPT, GPTConfig
from sparsecircuits.tasks import TaskBatch
from sparsecircuits.tasks.pairs import pad_batch

VOCAB, N_PAIRS, LENGTH = 50, 6, 9
CHANGED = 4  # the one position where a clean and a corrupted prompt differ


def make_model(scale: float = 0.3, **options) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=VOCAB, n_layer=3, d_model=32, d_head=8, n_ctx=16, **options)
    model = GPT(config)
    with torch.no_grad():  # larger weights than the initialisation, so every path matters
        for param in model.parameters():
            param.add_(scale * torch.randn_like(param))
    return model.eval()


def make_pairs() -> TaskBatch:
    """Pairs whose prompts differ in the one token at CHANGED; pair 0 is a token shorter."""
    generator = torch.Generator().manual_seed(3)
    clean = torch.randint(0, VOCAB, (N_PAIRS, LENGTH), generator=generator)
    corrupted = clean.clone()
    corrupted[:, CHANGED] = (clean[:, CHANGED] + 1 + torch.arange(N_PAIRS)) % VOCAB
    lengths = [LENGTH - 1] + [LENGTH] * (N_PAIRS - 1)
    prompts = [
        row[:length].tolist()
        for rows in (clean, corrupted)
        for row, length in zip(rows, lengths, strict=True)
    ]
    answers = torch.randint(0, VOCAB, (2, N_PAIRS), generator=generator).tolist()
    return pad_batch(prompts, answers[0], answers[1], pad_id=0)


def test_residual_patching_at_layer_0_restores_exactly_the_changed_position() -> None:
    model, pairs = make_model(), make_pairs()
    result = patching(model, pairs, "resid")
    assert result.values.shape == (3, shared_positions(pairs))
    # Layer 0's input is the embedding: where the tokens agree, patching changes nothing.
    # Pair 0 ends a token earlier, so its changed position is one column further right.
    layer0 = result.values[0]
    unchanged = [k for k in range(shared_positions(pairs)) if k not in (CHANGED - 1, CHANGED)]
    assert torch.allclose(layer0[unchanged], torch.zeros(len(unchanged)), atol=1e-5)
    assert abs(float(layer0[CHANGED - 1] + layer0[CHANGED]) - 1.0) < 1e-4
    # Patching every position of a layer's input restores the clean run exactly.
    everything = torch.ones(1, *pairs.clean.shape, 1, dtype=torch.bool)
    value = patch_scan(model, pairs, "blocks.1.hook_resid_pre", everything)
    assert abs(float(value) - result.baselines.clean) < 1e-4


def test_clean_values_move_to_the_aligned_corrupted_positions() -> None:
    # Pair 0: one token substituted; pair 1: the clean 5 replaced by two tokens 8, 8.
    pairs = pad_batch([[1, 2, 3, 4], [5, 6, 7], [9, 2, 3, 4], [8, 8, 6, 7]], [0, 0], [1, 1], 0)
    moved, valid = pairs.at_corrupted_positions(pairs.clean.unsqueeze(-1).float())
    assert valid.tolist() == [[True] * 4, [False, False, True, True]]
    assert moved.squeeze(-1)[valid].tolist() == [1, 2, 3, 4, 6, 7]
    assert shared_positions(pairs) == 3


def test_attribution_takes_two_forward_and_one_backward_pass_and_agrees() -> None:
    # A first-order estimate: it agrees where the model is close to linear over the change
    # (weights of moderate size here; at 0.3 the correlation drops to about 0.6).
    model, pairs = make_model(scale=0.1), make_pairs()
    calls = []
    with model.hooks([("hook_embed", lambda x, hook: calls.append(1))]):
        hooks = [f"blocks.{layer}.attn.hook_z" for layer in range(3)]
        effects = attribution_effects(model, pairs, hooks)
    assert len(calls) == 2 and set(effects) == set(hooks)
    for site in ("resid", "heads"):
        exact = patching(model, pairs, site, "activation").values.flatten()
        estimate = patching(model, pairs, site, "attribution").values.flatten()
        correlation = torch.corrcoef(torch.stack([exact, estimate]))[0, 1]
        assert correlation > 0.95, (site, correlation)


def test_neuron_patching_has_one_column_per_neuron() -> None:
    model, pairs = make_model(d_mlp=24), make_pairs()
    result = patching(model, pairs, "neurons", "activation", metric="prob")
    assert result.values.shape == (3, 24) and result.values.isfinite().all()


def test_causal_tracing_restores_nothing_before_the_subject_and_all_at_the_end() -> None:
    model, pairs = make_model(), make_pairs()
    result = causal_trace(model, pairs, "resid", samples=3)
    columns_before = shared_positions(pairs) - 1 - (LENGTH - 1 - CHANGED)  # same in all pairs
    before = result.values[:, : columns_before - 1]
    assert torch.allclose(before, torch.zeros_like(before), atol=1e-4)
    assert torch.allclose(result.values[-1, -1], torch.tensor(1.0), atol=1e-4)
    assert result.baselines.clean > result.baselines.corrupted  # the noise hurt


def test_patch_and_trace_commands_write_figures(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "figures"
    args = ["--task", "single_double_quote", "--n", "8", "--out", str(out)]
    for command in (["patch", "--site", "heads"], ["patch", "--attribution"], ["trace"]):
        result = run_cli(command[0], str(tiny_run), *command[1:], *args)
        assert result.returncode == 0, result.stderr
    written = sorted(path.name for path in out.iterdir())
    assert "single_double_quote-heads-activation.png" in written
    assert "single_double_quote-resid-attribution.html" in written
    assert "single_double_quote-trace-mlp.json" in written
    grid = json.loads((out / "single_double_quote-trace-resid.json").read_text())
    assert len(grid["values"]) == 2 and grid["metric"] == "prob"
    html = (out / "single_double_quote-heads-activation.html").read_text()
    assert "<script" not in html


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--task", "nope"], "unknown task"), (["--site", "layers"], "layers")],
)
def test_patch_refuses_bad_input_in_one_line(
    tiny_run: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    base = ["patch", str(tiny_run), "--out", str(tmp_path / "o")]
    result = run_cli(*base, *(args if "--task" in args else ["--task", "var_if", *args]))
    assert result.returncode == 2 and message in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_grid_files_escape_labels_and_keep_the_numbers(tmp_path: Path) -> None:
    values = torch.tensor([[0.5, float("nan")], [-1.0, 2.0]])
    grid = Grid("t <b>", values, ["layer 0", "layer 1"], ["<script>alert(1)</script>", "\n"])
    png, html, numbers = write_grid(grid, tmp_path / "grid")
    assert png.read_bytes().startswith(b"\x89PNG")
    page = html.read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert json.loads(numbers.read_text())["values"] == [[0.5, None], [-1.0, 2.0]]
    with pytest.raises(ValueError, match="do not match"):
        Grid("bad", values, ["one row"], ["a", "b"])
