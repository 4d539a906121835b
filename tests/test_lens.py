"""Logit lens and tuned lens: the last layer is the model, the tuned lens beats the logit lens
on held-out text, the lens file round-trips, and the `lens` / `tuned-lens` commands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import sparsecircuits
from cli_runner import run_in_process as run_cli
from sparsecircuits.errors import UserError
from sparsecircuits.interp.lens import (
    REPORT_FILE,
    WEIGHTS_FILE,
    TunedLens,
    held_out_kl,
    lens_readout,
    load_tuned_lens,
    logit_lens,
    save_tuned_lens,
    task_lens,
    train_tuned_lens,
)
from sparsecircuits.model import GPT, GPTConfig
from sparsecircuits.tasks import TaskBatch


@pytest.fixture(scope="module")
def model() -> GPT:
    """Learned positions and a bigram table: the two places a lens could miss a term."""
    torch.manual_seed(0)
    config = GPTConfig(
        n_layer=3,
        d_model=32,
        d_head=16,
        n_ctx=16,
        vocab_size=50,
        learned_positions=True,
        bigram_table=True,
    )
    gpt = GPT(config).eval()
    with torch.no_grad():
        gpt.bigram.weight.normal_(std=1.0)  # zero at initialisation, which would hide it
        gpt.lm_head.bias.normal_(std=0.5)
    return gpt


@pytest.fixture
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny run, for tests that write a lens beside its model."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def test_last_layer_of_the_logit_lens_is_the_model(model: GPT) -> None:
    tokens = torch.randint(0, 50, (3, 16), generator=torch.Generator().manual_seed(1))
    log_probs = logit_lens(model, tokens)
    assert log_probs.shape == (4, 3, 16, 50)
    with torch.no_grad():
        expected = model(tokens).log_softmax(-1)
    torch.testing.assert_close(log_probs[-1], expected, rtol=0, atol=1e-6)
    # Earlier layers differ: the lens really reads each layer, not the output four times.
    assert (log_probs[0] - expected).abs().max() > 0.1
    # "embed" is the stream entering block 0: token + position embedding, then the bigram.
    with torch.no_grad():
        stream = model.wte(tokens) + model.wpe(torch.arange(16))
        embed = (model.lm_head(model.norm_final(stream)) + model.bigram(tokens)).log_softmax(-1)
    torch.testing.assert_close(log_probs[0], embed, rtol=0, atol=1e-5)
    # An untrained tuned lens is every translator at the identity: the logit lens again.
    torch.testing.assert_close(logit_lens(model, tokens, TunedLens.from_model(model)), log_probs)


def test_readout_agrees_with_the_full_lens(model: GPT) -> None:
    generator = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, 50, (2, 12), generator=generator)
    targets = torch.randint(0, 50, (2, 12), generator=generator)
    log_probs = logit_lens(model, tokens)
    readout = lens_readout(model, tokens, targets, k=3)
    target = log_probs.gather(-1, targets.expand(4, 2, 12).unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(readout.probability, target.exp())
    assert torch.equal(readout.rank, (log_probs > target.unsqueeze(-1)).sum(-1))
    assert torch.equal(readout.top_tokens[..., 0], log_probs.argmax(-1))
    assert readout.top_probability.shape == (4, 2, 12, 3)
    assert bool((readout.top_probability.diff(dim=-1) <= 0).all())
    # Only chosen positions: the same numbers, one position per sequence.
    positions = torch.tensor([5, 11])
    at = lens_readout(model, tokens, targets[[0, 1], positions], positions=positions, k=3)
    torch.testing.assert_close(at.probability, readout.probability[:, [0, 1], positions])
    assert torch.equal(at.top_tokens, readout.top_tokens[:, [0, 1], positions])


def test_task_lens_last_layer_is_the_task_margin(model: GPT) -> None:
    generator = torch.Generator().manual_seed(3)
    clean = torch.randint(0, 50, (6, 10), generator=generator)
    corrupted = clean.clone()
    corrupted[:, 2] = (clean[:, 2] + 1) % 50
    last = torch.tensor([9, 8, 9, 7, 9, 6])
    answers = torch.randint(0, 50, (2, 6), generator=generator)
    corrupted_last = last - torch.tensor([0, 1, 0, 0, 2, 0])  # prompts may differ in length
    other = (answers[0] + 7) % 50
    pairs = TaskBatch(
        tokens=torch.cat([clean, corrupted]),
        last=torch.cat([last, corrupted_last]),
        correct=torch.cat([answers[0], other]),
        wrong=torch.cat([other, answers[0]]),
        n_pairs=6,
    )
    result = task_lens(model, pairs)
    assert result.logit_diff.shape == result.accuracy.shape == (4,)
    assert result.n_prompts == 12
    with torch.no_grad():
        clean_logits = model(clean, logits_at=last)
        corrupted_logits = model(corrupted, logits_at=corrupted_last)
    rows = torch.arange(6)
    margins = torch.cat(
        [
            clean_logits[rows, pairs.clean_answer] - clean_logits[rows, pairs.corrupted_answer],
            corrupted_logits[rows, pairs.corrupted_answer]
            - corrupted_logits[rows, pairs.clean_answer],
        ]
    )
    torch.testing.assert_close(result.logit_diff[-1], margins.mean(), rtol=0, atol=1e-5)
    torch.testing.assert_close(result.accuracy[-1], (margins > 0).float().mean())


def test_tuned_lens_beats_the_logit_lens_on_held_out_text(tiny_run: Path) -> None:
    run = sparsecircuits.load(tiny_run)
    n_ctx = run.model_config.n_ctx
    lens, report = train_tuned_lens(run, tokens=40 * 4 * n_ctx, steps=40, seed=1)
    assert report.layers == ["embed", "layer 0", "layer 1"]
    assert report.tokens_trained == 40 * 4 * n_ctx and report.held_out_tokens > 0
    # The last layer is the model itself for both lenses, and keeps no translator.
    assert lens.n_layer == run.model_config.n_layer
    assert report.kl_logit_lens[-1] == pytest.approx(0, abs=1e-5)
    assert report.kl_tuned_lens[-1] == pytest.approx(0, abs=1e-5)
    plain, tuned = report.kl_logit_lens[:-1], report.kl_tuned_lens[:-1]
    assert sum(tuned) / len(tuned) < 0.8 * sum(plain) / len(plain), (plain, tuned)
    assert tuned[0] < plain[0]  # the embedding is the layer furthest from the output
    # Measured again, on other held-out text than the report's, the tuned lens still wins.
    again_plain, again_tuned, measured = held_out_kl(run, lens, 4 * n_ctx, batch_size=2)
    assert measured == 4 * n_ctx
    assert sum(again_tuned[:-1]) < sum(again_plain[:-1])


def test_tuned_lens_file_round_trip_and_refusals(run_copy: Path) -> None:
    run = sparsecircuits.load(run_copy)
    with pytest.raises(UserError, match="has no tuned lens"):
        load_tuned_lens(run)
    lens = TunedLens.from_model(run.model)
    with torch.no_grad():
        lens.weight.add_(torch.randn_like(lens.weight) * 0.1)
        lens.bias.normal_()
    report = train_report(run)
    paths = save_tuned_lens(run, lens, report)
    assert paths == [run.path / WEIGHTS_FILE, run.path / REPORT_FILE]
    saved = json.loads(paths[1].read_text())
    assert saved["layers"] == report.layers and saved["kl_tuned_lens"] == report.kl_tuned_lens
    assert saved["tokens_trained"] == 1234
    loaded = load_tuned_lens(sparsecircuits.load(run_copy))
    assert torch.equal(loaded.weight, lens.weight) and torch.equal(loaded.bias, lens.bias)
    # A lens trained for another shape is refused with a line that says so.
    save_tuned_lens(run, TunedLens(run.model_config.n_layer + 1, 8), report)
    with pytest.raises(UserError, match="does not fit this model"):
        load_tuned_lens(run)


def train_report(run) -> object:  # noqa: ANN001
    from sparsecircuits.interp.lens import TunedLensReport

    layers = ["embed"] + [f"layer {n}" for n in range(run.model_config.n_layer)]
    kl = [0.5] * (len(layers) - 1) + [0.0]
    return TunedLensReport(layers, 10, 1234, 0, 0.01, 64, kl, [x / 2 for x in kl])


def test_cli_trains_a_tuned_lens_and_reads_with_it(run_copy: Path, tmp_path: Path) -> None:
    refused = run_cli("lens", str(run_copy), "--prompt", "x = 1", "--out", str(tmp_path), "--tuned")
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "no tuned lens" in refused.stderr
    trained = run_cli("tuned-lens", str(run_copy), "--steps", "8", "--tokens", "1024", "--quiet")
    assert trained.returncode == 0, trained.stderr
    assert "logit lens" in trained.stdout and "tuned lens" in trained.stdout
    checkpoint = sparsecircuits.load(run_copy).path
    assert (checkpoint / WEIGHTS_FILE).is_file()
    assert json.loads((checkpoint / REPORT_FILE).read_text())["tokens_trained"] == 1024
    out = tmp_path / "figures"
    result = run_cli("lens", str(run_copy), "--prompt", "def f(x):", "--out", str(out), "--tuned")
    assert result.returncode == 0, result.stderr
    assert "trained on 1,024 tokens" in result.stdout
    for suffix in (".png", ".html", ".json"):
        assert (out / f"tuned-lens-prompt{suffix}").stat().st_size > 0
    grid = json.loads((out / "tuned-lens-prompt.json").read_text())
    assert grid["lens"] == "tuned lens" and grid["rows"][0] == "embed"


def test_cli_logit_lens_on_a_prompt_and_a_task(tiny_run: Path, tmp_path: Path) -> None:
    prompt = "def f(x):\n    return x"
    result = run_cli("lens", str(tiny_run), "--prompt", prompt, "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    paths = [tmp_path / f"logit-lens-prompt{suffix}" for suffix in (".png", ".html", ".json")]
    assert all(path.stat().st_size > 0 for path in paths)
    grid = json.loads(paths[2].read_text())
    tokenizer = sparsecircuits.load(tiny_run).tokenizer
    assert "".join(grid["columns"]) == prompt
    assert grid["rows"] == ["embed", "layer 0", "layer 1"]
    assert grid["values"][0][-1] is None  # no next token after the prompt's last
    assert all(0 <= value <= 1 for row in grid["values"] for value in row[:-1])
    assert len(grid["top1_tokens"]) == 3 and len(grid["top1_tokens"][0]) == len(grid["columns"])
    assert len(grid["columns"]) == len(tokenizer.encode(prompt))
    assert result.stdout.count("\n") >= 5 and "layer 1" in result.stdout
    task = run_cli("lens", str(tiny_run), "--task", "var_if", "--n", "8", "--out", str(tmp_path))
    assert task.returncode == 0, task.stderr
    grid = json.loads((tmp_path / "logit-lens-var_if.json").read_text())
    assert grid["columns"] == ["logit diff", "accuracy"] and len(grid["values"]) == 3
    assert all(0 <= accuracy <= 1 for _, accuracy in grid["values"])
    assert (tmp_path / "logit-lens-var_if.png").is_file()


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["lens", "{run}", "--out", "{out}"], "either --prompt"),
        (["lens", "{run}", "--prompt", "x", "--task", "var_if", "--out", "{out}"], "either"),
        (["lens", "{run}", "--prompt", "", "--out", "{out}"], "empty"),
        (["lens", "{run}", "--task", "no_such_task", "--out", "{out}"], "unknown task"),
        (["lens", "{run}", "--prompt", "x " * 200, "--out", "{out}"], "at most 64"),
        (["lens", "{out}/missing", "--prompt", "x", "--out", "{out}"], "no such run"),
        (["tuned-lens", "{run}", "--steps", "50", "--tokens", "100"], "less than one window"),
        (["tuned-lens", "{run}", "--steps", "0"], "--steps"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    tiny_run: Path, tmp_path: Path, arguments: list[str], message: str
) -> None:
    filled = [arg.format(run=tiny_run, out=tmp_path) for arg in arguments]
    result = run_cli(*filled)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (sparsecircuits.load(tiny_run).path / WEIGHTS_FILE).exists()
