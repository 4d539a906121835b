"""`prune`, `circuit eval`, `circuit draw` and `frontier` end to end, on a model that does a task.

The model is tiny and taught the quote task directly (a few seconds), so pruning has a real
behaviour to find; the shipped reference models are measured in the README, not here.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch

from cli_runner import run_in_process as run_cli
from sparsecircuits.circuits import frontier as frontier_module
from sparsecircuits.circuits.attribution import (
    EdgeScores,
    eap_circuit,
    eap_outcome,
    edge_scores,
    top_edges_circuit,
)
from sparsecircuits.circuits.config import PruneConfig
from sparsecircuits.circuits.prune import calibrated_loss
from sparsecircuits.circuits.space import circuit_space
from sparsecircuits.circuits.task_data import task_splits
from sparsecircuits.loading import load_run, save_checkpoint
from sparsecircuits.tasks import (
    task_pairs,
    write_pairs_jsonl,
)

TASK = "single_double_quote"
LOSS_FIELDS = ("circuit_loss", "full_model_loss", "ablated_circuit_loss", "random_circuit_loss")


def test_prune_finds_a_small_sufficient_and_necessary_circuit(
    quote_run: Path, tmp_path: Path
) -> None:
    circuit_file = tmp_path / "quote.json"
    arguments = ["prune", str(quote_run), "--task", TASK, "--target-loss", "0.3"]
    result = run_cli(
        *arguments, "--steps", "150", "--sweep", "2", "--out", str(circuit_file), "--json"
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["task"] == TASK
    assert summary["full_model_loss"] < 0.3
    total_nodes = 2 * (7 * 32 + 128) + 32
    assert 0 < summary["nodes"] < total_nodes / 4
    assert summary["circuit_loss"] < 0.45  # target met on selection pairs, checked on test pairs
    assert summary["ablated_circuit_loss"] > summary["circuit_loss"] + 0.1
    assert summary["random_circuit_loss"] > summary["circuit_loss"] + 0.1
    record = json.loads(circuit_file.read_text())
    assert record["task"] == TASK and record["target_loss"] == 0.3
    assert len(record["nodes"]) == summary["nodes"] and len(record["edges"]) == summary["edges"]
    trim = record["metrics"]["trim"]  # trimming only drops nodes from the top-k circuit
    assert trim["tried"] >= trim["dropped"] >= 0
    # ... and verification on other pairs only adds some back until the target is met there.
    verification = record["metrics"]["verification"]
    assert verification["met"] and verification["loss"] <= 0.3
    kept = trim["nodes_before"] - trim["nodes_dropped"] + verification["nodes_added"]
    assert kept == summary["nodes"]

    evaluated = run_cli(
        "circuit", "eval", str(circuit_file), str(quote_run), "--task", TASK, "--json"
    )
    assert evaluated.returncode == 0, evaluated.stderr
    again = json.loads(evaluated.stdout)
    assert again["model_matches"] and again["nodes"] == summary["nodes"]
    assert all(0 <= again[field] < 5 for field in LOSS_FIELDS)
    other = other_model_of_the_same_shape(quote_run, tmp_path / "other")
    evaluate_there = ["circuit", "eval", str(circuit_file), str(other), "--task", TASK, "--json"]
    refused = run_cli(*evaluate_there)
    assert refused.returncode == 2 and "pruned from another model" in refused.stderr
    assert "--force" in refused.stderr and refused.stdout == ""
    forced = run_cli(*evaluate_there, "--force")
    assert forced.returncode == 0 and "warning:" in forced.stderr
    assert json.loads(forced.stdout)["model_matches"] is False

    for suffix in (".html", ".svg"):
        drawing = tmp_path / f"quote{suffix}"
        drawn = run_cli("circuit", "draw", str(circuit_file), "--out", str(drawing))
        assert drawn.returncode == 0, drawn.stderr
        text = drawing.read_text()
        assert "<svg" in text and text.count("<circle") >= summary["nodes"] - 1

    # Explain the circuit's nodes: the explanations land in the circuit file and the drawing.
    explained = run_cli(
        "explain", str(quote_run), "--circuit", str(circuit_file), "--tokens", "20000",
        "--no-ablation", "--quiet", "--db", str(tmp_path / "e.sqlite"),
    )  # fmt: skip
    assert explained.returncode == 0, explained.stderr
    nodes = json.loads(circuit_file.read_text())["nodes"]
    assert all(isinstance(node.get("explanation"), str) for node in nodes)
    assert (
        run_cli("circuit", "eval", str(circuit_file), str(quote_run), "--task", TASK).returncode
        == 0
    )
    drawing = tmp_path / "explained.svg"
    assert run_cli("circuit", "draw", str(circuit_file), "--out", str(drawing)).returncode == 0
    assert "explanation: " in drawing.read_text()


def other_model_of_the_same_shape(run: Path, out: Path) -> Path:
    loaded = load_run(run)
    with torch.no_grad():
        for param in loaded.model.parameters():
            param.mul_(0.9)
    save_checkpoint(out, loaded.model, loaded.tokenizer, loaded.config, loaded.state)
    return out


def test_prune_says_when_the_target_cannot_be_met(quote_run: Path) -> None:
    # The model was only taught quotes: on `var_if` no circuit beats chance (~0.69).
    arguments = ["prune", str(quote_run), "--task", "var_if", "--target-loss", "0.3"]
    result = run_cli(*arguments, "--steps", "20", "--sweep", "1")
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: no circuit of var_if reached target loss 0.3")
    assert "best selection loss" in error and "Traceback" not in result.stderr


def test_prune_rejects_bad_input_in_one_line(quote_run: Path, tmp_path: Path) -> None:
    bad_pairs = tmp_path / "bad.jsonl"
    write_pairs_jsonl(task_pairs("var_if", "test", 4), bad_pairs)
    bad_pairs.write_text(bad_pairs.read_text() + "{oops\n")
    cases = {
        ("--task", "no_such_task"): "unknown task",
        ("--pairs", str(bad_pairs)): "malformed lines 5",
        (): "exactly one of --task",
    }
    for extra, message in cases.items():
        result = run_cli("prune", str(quote_run), *extra)
        assert result.returncode == 2, (extra, result.stderr)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "command",
    [
        ("prune", "{run}", "--task", TASK),
        ("tasks", "eval", "{run}", "--task", TASK),
        ("circuit", "eval", "{circuit}", "{run}", "--task", TASK),
    ],
)
@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("tpu", "unknown device 'tpu'"),
        ("cpu:1", "unknown device 'cpu:1'"),
        ("cuda:x", "unknown device 'cuda:x'"),
        *([("cuda", "no CUDA GPU is available")] * (not torch.cuda.is_available())),
    ],
)
def test_device_flags_refuse_a_device_this_machine_lacks(
    quote_run: Path, tmp_path: Path, command: tuple[str, ...], device: str, message: str
) -> None:
    circuit = tmp_path / "any.json"
    circuit.write_text("{}")
    arguments = [part.format(run=quote_run, circuit=circuit) for part in command]
    result = run_cli(*arguments, "--device", device)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_controls_find_no_circuit_in_a_shuffled_model_or_for_nonsense(quote_run: Path) -> None:
    arguments = ["prune", str(quote_run), "--task", TASK, "--target-loss", "0.3", "--controls"]
    result = run_cli(*arguments, "--steps", "60", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["control random_weights"] == "no circuit met the target"
    # The learnable nonsense rule: pruning may assemble a circuit for it, but the guard must
    # reject it (the model does not do the task).
    nonsense = summary["control nonsense_task"]
    assert nonsense == "no circuit met the target" or "rejected: the model does not" in nonsense
    assert "control zero_ablation" in summary
    # The found circuit itself is the model's.
    assert summary["accepted"] is True, summary["reason"]
    assert summary["agreement_with_full_model"] >= 0.9


def test_prune_accepts_a_users_own_pairs(quote_run: Path, tmp_path: Path) -> None:
    pairs_file = tmp_path / "my_quotes.jsonl"
    write_pairs_jsonl(task_pairs(TASK, "test", 64, seed=3), pairs_file)
    arguments = ["prune", str(quote_run), "--pairs", str(pairs_file), "--target-loss", "0.4"]
    circuit_file = tmp_path / "mine.json"
    options = ["--steps", "60", "--sweep", "1", "--k-coef", "3e-4", "--out", str(circuit_file)]
    result = run_cli(*arguments, *options, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["task"] == "my_quotes" and summary["nodes"] > 0
    record = json.loads(circuit_file.read_text())
    assert [setting["k_coef"] for setting in record["sweep"]] == [3e-4]
    assert record["metrics"]["verification"]["pairs"] == 64 // 5  # a fifth of the file


def test_frontier_plots_each_run_and_reuses_stored_prunes(
    quote_run: Path, tmp_path: Path, private_cache: Path
) -> None:
    out = tmp_path / "frontier.png"
    base = ["frontier", str(quote_run), "--tasks", TASK, "--out", str(out), "--json"]
    base += ["--sweep", "1", "--steps", "60", "--seeds", "1"]
    arguments = [*base, "--target-loss", "0.3"]
    first = run_cli(*arguments)
    assert first.returncode == 0, first.stderr
    (point,) = json.loads(first.stdout)
    assert point["val_loss"] == 6.5 and point["tasks_compared"] == [TASK]
    edges = point["edges"][TASK]
    assert edges["n"] == 1 and edges["median"] > 0
    assert point["edges_median"] == edges["median"] == point["edges_by_seed"][0]
    assert out.read_bytes()[:4] == b"\x89PNG"

    again = run_cli(*arguments)
    assert again.returncode == 0 and "stored result" in again.stderr
    assert json.loads(again.stdout) == [point]
    with sqlite3.connect(private_cache / "prunes.sqlite") as database:
        rows = database.execute("SELECT task, edges, error FROM prunes").fetchall()
    assert (TASK, edges["median"], None) in rows

    # The JSON a frontier printed serves another run as recorded prunes, without the store.
    recorded = tmp_path / "frontier.json"
    recorded.write_text(first.stdout)
    (private_cache / "prunes.sqlite").unlink()
    reused = run_cli(*arguments, "--reuse", str(recorded))
    assert reused.returncode == 0 and "recorded earlier" in reused.stderr
    assert json.loads(reused.stdout) == [point]

    fresh = run_cli(*arguments, "--fresh")
    assert fresh.returncode == 0 and "stored result" not in fresh.stderr
    other_target = run_cli(*base, "--target-loss", "0.31")
    assert other_target.returncode == 0 and "stored result" not in other_target.stderr


def test_frontier_compares_the_tasks_every_run_does_as_medians_over_seeds(
    quote_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sparsecircuits.circuits import seeds as seeds_module

    copy = tmp_path / "copy"
    shutil.copytree(quote_run, copy)
    # The copy's full model misses the target on var_if: only the quote and if tasks compare.
    full_losses = {(str(quote_run), "var_if"): 0.1, (str(copy), "var_if"): 0.4}
    edges = {  # per run and task, the edges of seeds 0, 1, 2
        (str(quote_run), TASK): [10, 12, 30],
        (str(quote_run), "if_equals"): [100, 90, 80],
        (str(quote_run), "var_if"): [5, 5, 5],
        (str(copy), TASK): [40, 41, 42],
        (str(copy), "if_equals"): [400, 7, 8],
    }
    loaded_paths = {}

    def fake_load(path: Path):
        run = load_run(path)
        loaded_paths[id(run)] = str(path)
        return run

    def fake_validation_loss(run, task: str) -> float:
        return full_losses.get((loaded_paths[id(run)], task), 0.05)

    def fake_prune(run, path, splits, config, *args, **kwargs) -> dict:
        return {"edges": edges[(str(path), splits.name)][config.seed]}

    monkeypatch.setattr(frontier_module, "load_run", fake_load)
    monkeypatch.setattr(frontier_module, "validation_loss", fake_validation_loss)
    monkeypatch.setattr(seeds_module, "stored_prune_metrics", fake_prune)
    config = PruneConfig(target_loss=0.15)
    points = frontier_module.measure_frontier(
        [quote_run, copy], [TASK, "if_equals", "var_if"], config, seeds=3
    )
    assert all(p["tasks_compared"] == [TASK, "if_equals"] for p in points)
    # Per task the median over seeds (12 and 90; 41 and 8), then the median over tasks.
    assert [p["edges_median"] for p in points] == [51, 24.5]
    # Seed by seed: median over tasks of (10, 100), (12, 90), (30, 80); (40, 400), (41, 7), ...
    assert points[0]["edges_by_seed"] == [55, 51, 55]
    assert points[1]["edges_by_seed"] == [220, 24, 25]
    assert points[1]["full_validation_loss"]["var_if"] == 0.4


def test_report_shows_the_circuit_in_a_browser(
    quote_run: Path, tiny_run: Path, tmp_path: Path
) -> None:
    from browser import rendered_dom
    from sparsecircuits.circuits.showcase import prune_and_draw
    from sparsecircuits.report import write_run_report

    circuit = prune_and_draw(quote_run, tmp_path, steps=60, sweep=1)
    report = write_run_report(tiny_run, tmp_path / "report.html", circuit=circuit)
    dom = rendered_dom(report)
    nodes = circuit["record"]["metrics"]["nodes"]
    assert f"<code>{TASK}</code>" in dom and dom.count('class="node"') == nodes
    assert "ablated circuit loss" in dom and "random circuit loss" in dom
    pairs = circuit["record"]["metrics"]["verification"]["pairs"]
    assert f"verification on {pairs} other pairs added" in dom
    page = rendered_dom(tmp_path / "circuit.html")
    assert page.count('class="node"') == nodes and "<script" not in page


def test_edge_attribution_baseline_reaches_the_target_and_beats_random_edges(
    quote_run: Path,
) -> None:
    run = load_run(quote_run)
    space = circuit_space(run, "mean")
    splits = task_splits(run, TASK, None)
    circuit = eap_circuit(space, splits, target_loss=0.3)
    assert circuit.select_loss <= 0.3 and circuit.nodes == int(circuit.keep.sum()) > 0
    assert circuit.edges == space.count_edges(circuit.keep)
    # The same number of edges drawn at random does the task worse than the top-scored ones.
    edges = edge_scores(space, splits.train)
    generator = torch.Generator().manual_seed(0)
    shuffled = EdgeScores(
        torch.rand(len(edges.scores), generator=generator), edges.link, edges.target, edges.source
    )
    random_keep = top_edges_circuit(space, shuffled, circuit.k)
    random_loss = calibrated_loss(space, random_keep, splits.select, splits.select)
    assert random_loss > circuit.select_loss


def test_prune_method_eap_writes_a_circuit_file_the_other_commands_read(
    quote_run: Path, tmp_path: Path
) -> None:
    circuit_file = tmp_path / "eap.json"
    arguments = ["prune", str(quote_run), "--task", TASK, "--target-loss", "0.3", "--method"]
    result = run_cli(*arguments, "eap", "--out", str(circuit_file), "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(circuit_file.read_text())
    assert record["metrics"]["method"] == "eap" and record["metrics"]["nodes"] > 0
    assert json.loads(result.stdout)["edges"] == record["metrics"]["edges"]
    drawn = run_cli("circuit", "draw", str(circuit_file), "--out", str(tmp_path / "eap.svg"))
    assert drawn.returncode == 0, drawn.stderr
    refused = run_cli(*arguments, "eap", "--controls")
    assert refused.returncode == 2 and "--method prune" in refused.stderr


def test_eap_circuits_get_the_pruners_post_processing_and_keep_the_raw_size(
    quote_run: Path,
) -> None:
    run = load_run(quote_run)
    splits = task_splits(run, TASK, None)
    config = PruneConfig(target_loss=0.3)
    raw = eap_outcome(run, splits, config, post_process=False, log=lambda _: None).metrics
    post = eap_outcome(run, splits, config, post_process=True, log=lambda _: None).metrics
    assert raw["post_processed"] is False and "verification" not in raw
    assert (raw["nodes"], raw["edges"]) == (raw["eap"]["nodes"], raw["eap"]["edges"])
    # The same top-k circuit before post-processing; after it, verified on other pairs and
    # never larger than the raw circuit unless verification had to grow it back.
    assert post["eap"] == raw["eap"] and post["post_processed"] is True
    assert post["verification"]["met"] and post["verification"]["loss"] <= 0.3
    grown = post["verification"]["nodes_added"]
    assert post["nodes"] <= raw["nodes"] + grown
    assert post["trim"]["tried"] >= 1 and post["effort"]["mask_steps"] == 0


def test_prune_strict_all_prunes_measures_and_records_the_circuit_alone(
    quote_run: Path, tmp_path: Path
) -> None:
    circuit_file = tmp_path / "strict.json"
    arguments = ["prune", str(quote_run), "--task", TASK, "--target-loss", "0.3", "--steps", "60"]
    # --no-trim: trimming a strict circuit (a few hundred nodes here) one drop at a time is slow.
    options = ["--no-trim", "--strict", "all", "--out", str(circuit_file), "--json"]
    result = run_cli(*arguments, *options)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["strict"] == ["embedding", "topk", "norm"]
    record = json.loads(circuit_file.read_text())
    switches = ("embedding_nodes", "topk_after_ablation", "frozen_norm_scale")
    assert all(record["prune_config"][name] is True for name in switches)
    # Embedding channels are nodes like the others: counted, and only where a kept read is.
    kinds = [node["kind"] for node in record["nodes"]]
    assert len(kinds) == summary["nodes"] and "embed" in kinds
    reads = {node["index"] for node in record["nodes"] if node["kind"].endswith(("_in", "_norm"))}
    assert {node["index"] for node in record["nodes"] if node["kind"] == "embed"} <= reads
    # `circuit eval` measures it as it was pruned (the space rebuilt from the record).
    evaluate = ["circuit", "eval", str(circuit_file), str(quote_run), "--task", TASK, "--json"]
    evaluated = run_cli(*evaluate)
    assert evaluated.returncode == 0, evaluated.stderr
    measured = json.loads(evaluated.stdout)
    assert measured["strict"] == summary["strict"] and measured["nodes"] == summary["nodes"]
    drawing = tmp_path / "strict.svg"
    drawn = run_cli("circuit", "draw", str(circuit_file), "--out", str(drawing))
    assert drawn.returncode == 0, drawn.stderr
    assert "embedding" in drawing.read_text()


def test_prune_strict_refuses_an_unknown_name_in_one_line(quote_run: Path) -> None:
    result = run_cli("prune", str(quote_run), "--task", TASK, "--strict", "embedding,bogus")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == (
        "error: --strict 'bogus' is not one of embedding, topk, norm or all (comma-separated)"
    )
