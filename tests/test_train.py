import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cli_runner import run_cli
from sparsecircuits.errors import UserError
from sparsecircuits.loading import load_run
from sparsecircuits.loading.checkpoint import latest_name
from sparsecircuits.model import next_token_loss
from sparsecircuits.train import preset_configs, train
from sparsecircuits.train.flags import train_command


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_tiny_run_lowers_validation_loss_and_reaches_its_density(tiny_run):
    evals = [r["val_loss"] for r in metrics(tiny_run) if "val_loss" in r]
    assert len(evals) == 2
    run = load_run(tiny_run)
    vocab = run.model_config.vocab_size
    # Untrained, the loss is about ln(vocab); training must beat that clearly.
    assert evals[-1] < math.log(vocab) - 0.5
    assert run.state["density"] == pytest.approx(1 / 16)
    for name, param, rule in run.model.weight_sparsity_groups():
        if rule is None:
            assert int(param.count_nonzero()) <= round(param.numel() / 16) + 1, name
    assert (tiny_run / "loss.png").stat().st_size > 1000


def test_training_scores_the_eval_tasks_at_each_evaluation(tiny_run):
    scored = [r["tasks"] for r in metrics(tiny_run) if "val_loss" in r]
    assert len(scored) == 2
    for tasks in scored:
        assert set(tasks) == {"single_double_quote", "var_if"}
        for score in tasks.values():
            assert 0 <= score["accuracy"] <= 1 and score["loss"] > 0


def test_checkpoint_round_trip_gives_identical_logits(tiny_run, tmp_path):
    run = load_run(tiny_run)
    folder = tiny_run / "checkpoints" / latest_name(tiny_run)
    again = load_run(folder)
    tokens = torch.tensor([run.tokenizer.encode("def f(x):\n    return x")])
    torch.testing.assert_close(run.model(tokens), again.model(tokens), rtol=0, atol=0)
    assert run.tokenizer.decode(tokens[0].tolist()) == "def f(x):\n    return x"


def test_resume_replays_the_same_loss_trajectory(tiny_run, tmp_path, corpus_dir):
    copy = tmp_path / "resumed"
    shutil.copytree(tiny_run, copy)
    shutil.rmtree(copy / "checkpoints" / "step-0000080")
    (copy / "LATEST").write_text("step-0000040\n")
    result = run_cli("train", "--out", str(copy), "--resume", "--quiet")
    assert result.returncode == 0, result.stderr
    straight, resumed = metrics(tiny_run), metrics(copy)
    assert [r["step"] for r in resumed] == list(range(1, 81))
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight]


def test_info_reports_sizes_and_density(tiny_run):
    result = run_cli("info", str(tiny_run), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["nonzero_params"] < summary["total_params"]
    assert 0.05 < summary["density"] < 0.2
    assert summary["tokens_trained"] == 80 * 8 * 64
    assert {"attn_q", "mlp_in", "mlp_out", "embedding"} <= set(summary["density_by_kind"])
    text = run_cli("info", str(tiny_run))
    assert "nonzero" in text.stdout and "validation loss" in text.stdout


def test_dense_baseline_is_the_same_command_with_density_one(tmp_path, corpus_dir):
    out = tmp_path / "dense"
    args = ["--preset", "tiny", "--density", "1", "--steps", "6", "--data", str(corpus_dir)]
    result = run_cli("train", *args, "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    summary = json.loads(run_cli("info", str(out), "--json").stdout)
    assert summary["density"] > 0.99


def test_embedding_density_flag_keeps_more_of_the_embeddings(tmp_path, corpus_dir):
    out = tmp_path / "embeddings"
    args = ["--preset", "tiny", "--data", str(corpus_dir), "--steps", "30", "--quiet"]
    result = run_cli("train", *args, "--embedding-density", "0.5", "--out", str(out))
    assert result.returncode == 0, result.stderr
    by_kind = json.loads(run_cli("info", str(out), "--json").stdout)["density_by_kind"]
    assert by_kind["embedding"] == pytest.approx(0.5, abs=0.01)
    assert by_kind["bias"] == pytest.approx(0.5, abs=0.02)
    # Block weights keep 1/16, or the 4-per-channel minimum: 4 of 32 inputs in this preset.
    assert by_kind["attn_q"] == pytest.approx(4 / 32)
    # The command that reproduces the run (in an exported model's README) carries the flag.
    assert "--embedding-density 0.5" in train_command(load_run(out).config, str(out))


def test_two_process_torchrun_training(tmp_path, corpus_dir):
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "sparsecircuits",
        "train",
        "--preset",
        "tiny",
        "--steps",
        "8",
        "--quiet",
        "--data",
        str(corpus_dir),
        "--out",
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = load_run(out)
    assert run.state["step"] == 8
    # Both processes applied identical updates, so one checkpoint describes the model.
    assert len(metrics(out)) == 8


def test_reading_losses_back_every_few_steps_changes_nothing_it_records(tmp_path, corpus_dir):
    """The GPU path reads losses back once every few steps; on any device the run it records
    is the one that reads them every step."""
    lines = {}
    for sync_every in (1, 5):
        model_config, config = preset_configs("tiny")
        config.data, config.steps, config.eval_every = str(corpus_dir), 12, 6
        out = tmp_path / f"sync{sync_every}"
        train(model_config, config, out, progress=False, sync_every=sync_every)
        lines[sync_every] = [
            {key: value for key, value in line.items() if key != "tokens_per_second"}
            for line in metrics(out)
        ]
    assert len(lines[1]) == 12 and lines[1] == lines[5]
    assert [line["step"] for line in lines[5] if "val_loss" in line] == [6, 12]


@pytest.mark.parametrize("sync_every", [1, 4])
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    tmp_path, corpus_dir, monkeypatch, sync_every
):
    import sparsecircuits.train.trainer as trainer

    calls = []

    def loss_that_diverges_at_step_6(logits, targets):
        calls.append(1)
        loss = next_token_loss(logits, targets)
        return loss * float("nan") if len(calls) > 5 else loss

    monkeypatch.setattr(trainer, "next_token_loss", loss_that_diverges_at_step_6)
    model_config, config = preset_configs("tiny")
    config.data, config.steps, config.checkpoint_every = str(corpus_dir), 30, 2
    with pytest.raises(UserError, match="loss became nan at step 5; stopped"):
        train(model_config, config, tmp_path / "nan", progress=False, sync_every=sync_every)
    run = load_run(tmp_path / "nan")
    assert run.state["step"] == 4
    assert all(torch.isfinite(p).all() for p in run.model.parameters())


def test_kill_during_training_never_breaks_the_latest_checkpoint(tmp_path, corpus_dir):
    out = tmp_path / "killed"
    command = [
        sys.executable,
        "-m",
        "sparsecircuits",
        "train",
        "--preset",
        "tiny",
        "--steps",
        "400",
        "--checkpoint-every",
        "1",
        "--quiet",
        "--data",
        str(corpus_dir),
        "--out",
        str(out),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while latest_name(out) in (None, "step-0000001", "step-0000002") and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.37)  # land somewhere inside the stream of checkpoint writes
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    run = load_run(out)
    assert run.state["step"] >= 3
    result = run_cli("train", "--out", str(out), "--resume", "--quiet", "--steps", "400")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "huge"], "unknown preset"),
        (["--preset", "tiny", "--density", "0"], "--density"),
        (["--preset", "tiny", "--data", "/no/such/corpus"], "corpus not found"),
        (["--preset", "tiny", "--device", "tpu"], "unknown device"),
        (["--preset", "tiny", "--eval-tasks", "quote,var_if"], "unknown task"),
    ],
)
def test_bad_training_input_is_one_clear_line(tmp_path, args, message):
    result = run_cli("train", *args, "--out", str(tmp_path / "bad"))
    assert result.returncode != 0
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_empty_corpus_is_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "bad.py").write_bytes(b"\xff\xfe\x00 not utf-8 \xc3\x28")
    result = run_cli(
        "train", "--preset", "tiny", "--data", str(empty), "--out", str(tmp_path / "r")
    )
    assert result.returncode != 0
    assert "no readable documents" in result.stderr and "1 files skipped" in result.stderr
    assert "Traceback" not in result.stderr


def test_resume_with_a_different_config_is_refused(tiny_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    result = run_cli("train", "--out", str(copy), "--resume", "--density", "0.5")
    assert result.returncode != 0
    assert "config mismatch on --resume: density was 0.0625, now 0.5" in result.stderr


def test_training_into_an_existing_run_without_resume_is_refused(tiny_run):
    result = run_cli("train", "--preset", "tiny", "--out", str(tiny_run))
    assert result.returncode != 0 and "--resume" in result.stderr


def test_corrupt_or_truncated_checkpoints_are_reported(tiny_run, tmp_path):
    copy = tmp_path / "corrupt"
    shutil.copytree(tiny_run, copy)
    weights = copy / "checkpoints" / latest_name(copy) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    result = run_cli("info", str(copy))
    assert result.returncode != 0
    assert "corrupt checkpoint file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = run_cli("info", str(tmp_path / "nothing-here"))
    assert "no such run or checkpoint" in result.stderr
