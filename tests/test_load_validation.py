"""Damaged files end in one line naming the file and the field, never in a traceback.

Each test copies the session's tiny run, damages one file and runs the real command in-process
(or the loading function, where a command would first spend minutes on other work).
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sparsecircuits.circuits.circuit_file import circuit_on_model, read_circuit
from sparsecircuits.circuits.nodes import MEANS_FILE, load_or_compute_means, node_groups
from sparsecircuits.cli import main
from sparsecircuits.errors import UserError
from sparsecircuits.loading import TrainConfig, load_run
from sparsecircuits.loading.checkpoint import latest_name, load_optimizer_state
from sparsecircuits.loading.weights_file import save_weights
from sparsecircuits.model import GPT, GPTConfig
from sparsecircuits.tasks import read_pairs_jsonl
from sparsecircuits.train.trainer import build_optimizer


def run_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> str:
    """Run `sparsecircuits ARGS` in this process; returns the one error line it must end in."""
    monkeypatch.setattr(sys, "argv", ["sparsecircuits", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    stderr = capsys.readouterr().err
    lines = stderr.strip().splitlines()
    assert exit_info.value.code == 2, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def assert_names(line: str, file: str, *fields: str) -> None:
    assert f"{file}:" in line or f"{file} " in line, line
    for field in fields:
        assert field in line, line


@pytest.fixture
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    return copy


def checkpoint_of(run: Path) -> Path:
    return run / "checkpoints" / latest_name(run)


def edit_json(path: Path, change: Callable[[dict], object]) -> None:
    """Change the JSON object in `path` in place (what `change` returns is ignored)."""
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


# --- config.json -----------------------------------------------------------------------------

CONFIG_DAMAGE = {
    "d_model a string": (
        lambda c: c["model"].update(d_model="abc"),
        ["model.d_model: expected an integer, got 'abc'"],
    ),
    "n_layer a fraction": (
        lambda c: c["model"].update(n_layer=2.5),
        ["model.n_layer: expected an integer, got 2.5"],
    ),
    "model a list": (lambda c: c.update(model=[1, 2]), ["model: expected an object"]),
    "model missing": (lambda c: c.pop("model"), ["model: missing"]),
    "train missing": (lambda c: c.pop("train"), ["train: missing"]),
    "train.steps a string": (
        lambda c: c["train"].update(steps="many"),
        ["train.steps: expected an integer, got 'many'"],
    ),
    "learned_positions a number": (
        lambda c: c["model"].update(learned_positions=1),
        ["model.learned_positions: expected true or false, got 1"],
    ),
    "unknown model key": (lambda c: c["model"].update(colour="red"), ["model.colour: unknown"]),
    "d_head zero": (lambda c: c["model"].update(d_head=0), ["d_head must be at least 1"]),
    "data a list": (lambda c: c.update(data=[]), ["data: expected an object"]),
}


@pytest.mark.parametrize("case", CONFIG_DAMAGE)
def test_damaged_config_json_is_one_line(run_copy, monkeypatch, capsys, case):
    change, fragments = CONFIG_DAMAGE[case]
    edit_json(checkpoint_of(run_copy) / "config.json", change)
    line = run_main(monkeypatch, capsys, "info", str(run_copy))
    assert_names(line, "config.json", *fragments)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [('{"model": {', "not valid JSON"), ("[1, 2]", "expected an object, got [1, 2]")],
)
def test_config_json_that_is_no_object_is_one_line(run_copy, monkeypatch, capsys, text, fragment):
    (checkpoint_of(run_copy) / "config.json").write_text(text)
    line = run_main(monkeypatch, capsys, "info", str(run_copy))
    assert_names(line, "config.json", fragment)


def test_resume_with_a_damaged_config_is_one_line(run_copy, monkeypatch, capsys):
    edit_json(checkpoint_of(run_copy) / "config.json", lambda c: c["model"].update(d_model="x"))
    line = run_main(monkeypatch, capsys, "train", "--out", str(run_copy), "--resume")
    assert_names(line, "config.json", "model.d_model: expected an integer, got 'x'")


def test_newer_keys_still_load(run_copy):
    """A fingerprint, unknown top-level sections and the run-folder marker are no damage."""
    config = checkpoint_of(run_copy) / "config.json"
    edit_json(config, lambda c: c.update(notes="kept", data={**c["data"], "fingerprint": "f00"}))
    assert (run_copy / ".sparsecircuits-run.json").is_file()
    run = load_run(run_copy)
    assert run.config["notes"] == "kept" and run.config["data"]["fingerprint"] == "f00"
    assert run.config["model"] == json.loads(config.read_text())["model"]


def test_model_and_train_config_from_dict_name_the_field():
    with pytest.raises(UserError, match="model config: d_model: expected an integer, got 'abc'"):
        GPTConfig.from_dict({"d_model": "abc"})
    with pytest.raises(UserError, match=r"training config: lr: expected a number, got '1e-3'"):
        TrainConfig.from_dict({"lr": "1e-3"})
    assert TrainConfig.from_dict({"lr": 1, "removed_long_ago": 3}).lr == 1.0


# --- model.safetensors -----------------------------------------------------------------------


def test_weights_of_another_shape_are_one_line(run_copy, monkeypatch, capsys):
    folder = checkpoint_of(run_copy)
    config = json.loads((folder / "config.json").read_text())["model"]
    wider = GPT(GPTConfig.from_dict({**config, "d_model": 64, "d_mlp": 0}))
    save_weights(wider.state_dict(), folder / "model.safetensors")
    line = run_main(monkeypatch, capsys, "info", str(run_copy))
    assert_names(line, "model.safetensors", "shape", "config.json makes it")


def test_malformed_packing_metadata_is_one_line(run_copy, monkeypatch, capsys):
    weights = checkpoint_of(run_copy) / "model.safetensors"
    tensors = load_file(weights)
    metadata = {"format": "sparsecircuits.packed/1", "packed": json.dumps({"wte.weight": "big"})}
    save_file(tensors, weights, metadata=metadata)
    line = run_main(monkeypatch, capsys, "info", str(run_copy))
    assert_names(line, "model.safetensors", "packed['wte.weight']: expected a list, got 'big'")


# --- trainer_state.json ----------------------------------------------------------------------

STATE_DAMAGE = {
    "not an object": ([80], ["expected an object, got [80]"]),
    "step a string": ({"step": "80"}, ["step: expected an integer, got '80'"]),
    "step negative": ({"step": -1}, ["step: expected greater than or equal to 0, got -1"]),
    "step missing": ({"tokens": 5}, ["step: missing"]),
    "val_loss a string": ({"step": 80, "val_loss": "low"}, ["val_loss: expected a number"]),
}


@pytest.mark.parametrize("case", STATE_DAMAGE)
def test_damaged_trainer_state_is_one_line(run_copy, monkeypatch, capsys, case):
    state, fragments = STATE_DAMAGE[case]
    (checkpoint_of(run_copy) / "trainer_state.json").write_text(json.dumps(state))
    line = run_main(monkeypatch, capsys, "info", str(run_copy))
    assert_names(line, "trainer_state.json", *fragments)


# --- optimizer.json and optimizer.safetensors (--resume) -------------------------------------


def fresh_optimizer(run: Path) -> torch.optim.Optimizer:
    """The optimizer --resume builds, for the model of `run`."""
    loaded = load_run(run)
    train_config = TrainConfig.from_dict(loaded.config["train"])
    return build_optimizer(GPT(loaded.model_config), train_config)


def tensor_damage(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        tensors = load_file(folder / "optimizer.safetensors")
        change(tensors)
        save_file(tensors, folder / "optimizer.safetensors")

    return damage


def index_damage(change: Callable[[dict], object]) -> Callable[[Path], None]:
    return lambda folder: edit_json(folder / "optimizer.json", change)


OPTIMIZER_DAMAGE = {
    "param_groups missing": (
        index_damage(lambda index: index.pop("param_groups")),
        "optimizer.json",
        ["param_groups: missing"],
    ),
    "scalars missing": (
        index_damage(lambda index: index.pop("scalars")),
        "optimizer.json",
        ["scalars: missing"],
    ),
    "scalars a list": (
        index_damage(lambda index: index.update(scalars=[])),
        "optimizer.json",
        ["scalars: expected an object"],
    ),
    "lr a string": (
        index_damage(lambda index: index["param_groups"][0].update(lr="fast")),
        "optimizer.json",
        ["param_groups[0].lr: expected a number, got 'fast'"],
    ),
    "params not numbers": (
        index_damage(lambda index: index["param_groups"][1].update(params=["a"])),
        "optimizer.json",
        ["param_groups[1].params[0]: expected an integer"],
    ),
    "a group dropped": (
        index_damage(lambda index: index["param_groups"].pop()),
        "optimizer.json",
        ["param_groups: groups of", "parameters, but the model's optimizer has"],
    ),
    "a scalar of no parameter": (
        index_damage(lambda index: index["scalars"].update({"999.step": 3})),
        "optimizer.json",
        ["scalars['999.step']: optimizer.json has no parameter 999"],
    ),
    "a moment of the wrong shape": (
        tensor_damage(lambda tensors: tensors.update({"0.exp_avg": torch.zeros(3, 3)})),
        "optimizer.safetensors",
        ["0.exp_avg: shape [3, 3], but its parameter is"],
    ),
    "a step that is a vector": (
        tensor_damage(lambda tensors: tensors.update({"1.step": torch.zeros(4)})),
        "optimizer.safetensors",
        ["1.step: shape [4], expected a number"],
    ),
    "a badly named tensor": (
        tensor_damage(lambda tensors: tensors.update({"junk": torch.zeros(1)})),
        "optimizer.safetensors",
        ["junk: expected a name like 0.exp_avg"],
    ),
    "a slot missing": (
        tensor_damage(lambda tensors: tensors.pop("1.exp_avg_sq")),
        "optimizer.safetensors",
        ["1.*: parameter 1 has slots"],
    ),
}


@pytest.mark.parametrize("case", OPTIMIZER_DAMAGE)
def test_damaged_optimizer_state_is_one_line(run_copy, case):
    damage, file, fragments = OPTIMIZER_DAMAGE[case]
    folder = checkpoint_of(run_copy)
    optimizer = fresh_optimizer(run_copy)
    damage(folder)
    with pytest.raises(UserError) as error:
        load_optimizer_state(folder, optimizer)
    assert len(str(error.value).splitlines()) == 1
    assert_names(str(error.value), file, *fragments)


def test_undamaged_optimizer_state_loads(run_copy):
    load_optimizer_state(checkpoint_of(run_copy), fresh_optimizer(run_copy))


def test_resume_with_a_damaged_optimizer_is_one_line(run_copy, monkeypatch, capsys):
    edit_json(checkpoint_of(run_copy) / "optimizer.json", lambda index: index.pop("scalars"))
    line = run_main(monkeypatch, capsys, "train", "--out", str(run_copy), "--resume", "--quiet")
    assert_names(line, "optimizer.json", "scalars: missing")


# --- mean_activations.safetensors ------------------------------------------------------------


def write_means(run: Path, change: Callable[[dict], None]) -> None:
    loaded = load_run(run)
    means = {g.hook: torch.zeros(g.width) for g in node_groups(loaded.model_config)}
    change(means)
    save_file(means, checkpoint_of(run) / MEANS_FILE)


MEANS_DAMAGE = {
    "wrong width": (
        lambda means: means.update({"blocks.0.hook_attn_in": torch.zeros(7)}),
        ["blocks.0.hook_attn_in: torch.float32 of shape [7], expected floats of shape [32]"],
    ),
    "integers": (
        lambda means: means.update({"hook_final_norm": torch.zeros(32, dtype=torch.int64)}),
        ["hook_final_norm: torch.int64 of shape [32]"],
    ),
    "another model's hook": (
        lambda means: means.update({"blocks.7.hook_attn_in": torch.zeros(32)}),
        ["blocks.7.hook_attn_in: no such hook point in this model"],
    ),
}


@pytest.mark.parametrize("case", MEANS_DAMAGE)
def test_damaged_mean_activations_are_one_line(run_copy, case):
    change, fragments = MEANS_DAMAGE[case]
    write_means(run_copy, change)
    with pytest.raises(UserError) as error:
        load_or_compute_means(load_run(run_copy))
    assert_names(str(error.value), MEANS_FILE, *fragments)


def test_corrupt_mean_activations_are_one_line(run_copy):
    (checkpoint_of(run_copy) / MEANS_FILE).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(UserError) as error:
        load_or_compute_means(load_run(run_copy))
    assert len(str(error.value).splitlines()) == 1
    assert_names(str(error.value), MEANS_FILE, "corrupt mean-activation file")


def test_complete_mean_activations_are_used_as_they_are(run_copy):
    write_means(run_copy, lambda means: None)
    means = load_or_compute_means(load_run(run_copy))
    assert all(float(value.abs().sum()) == 0 for value in means.values())


# --- tokenizer.json --------------------------------------------------------------------------


def test_tokenizer_larger_than_the_model_is_one_line(
    run_copy, monkeypatch, capsys, stdlib_tokenizer
):
    stdlib_tokenizer.save(checkpoint_of(run_copy) / "tokenizer.json")
    line = run_main(monkeypatch, capsys, "info", str(run_copy))
    assert_names(line, "tokenizer.json", "2,048 tokens", "model.vocab_size")


def test_tokenizer_that_is_not_a_tokenizer_is_one_line(run_copy, monkeypatch, capsys):
    (checkpoint_of(run_copy) / "tokenizer.json").write_text('{"version": "1.0"}')
    line = run_main(monkeypatch, capsys, "info", str(run_copy))
    assert_names(line, "tokenizer.json", "cannot read tokenizer")


# --- circuit files ---------------------------------------------------------------------------


def small_circuit() -> dict:
    """A valid circuit file of a 2-layer, d_model 32 model, written by hand."""
    nodes = [
        {"id": "0.mlp_neuron.3", "layer": 0, "kind": "mlp_neuron", "index": 3},
        {"id": "1.attn_out.5", "layer": 1, "kind": "attn_out", "index": 5},
        {"id": "2.final_norm.5", "layer": 2, "kind": "final_norm", "index": 5},
    ]
    return {
        "format": "sparsecircuits.circuit/1",
        "task": "single_double_quote",
        "target_loss": 0.15,
        "ablation": "mean",
        "model": {
            "path": "no/such/model",
            "sha256": "0" * 16,
            "n_layer": 2,
            "d_model": 32,
            "d_mlp": 128,
            "d_head": 16,
        },
        "nodes": [{**node, "mean": 0.5, "score": 1.0} for node in nodes],
        "edges": [{"source": "0.mlp_neuron.3", "target": "1.attn_out.5", "weight": -0.25}],
        "calibration": {"scale": 1.5, "shift": {"12": 0.1}},
        "metrics": {"nodes": 3},
        "prune_config": {},
        "sweep": [],
    }


def set_path(record: dict, dotted: str, value: object) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        record = record[int(key)] if key.isdigit() else record[key]
    record[int(last) if last.isdigit() else last] = value


CIRCUIT_DAMAGE = {
    "calibration missing": ("calibration", None, ["calibration: missing"]),
    "layer a string": ("nodes.0.layer", "one", ["nodes[0].layer: expected an integer"]),
    "nodes an object": ("nodes", {}, ["nodes: expected a list"]),
    "unknown ablation": ("ablation", "median", ["ablation: expected 'mean' or 'zero'"]),
    "shift key not a token": (
        "calibration.shift",
        {"quote": 1.0},
        ["calibration.shift.quote (the key): expected an integer, got 'quote'"],
    ),
    "scale a string": ("calibration.scale", "big", ["calibration.scale: expected a number"]),
    "layer past the model": ("nodes.1.layer", 5, ["nodes[1].layer: 5 is past the last layer"]),
    "index past the model": ("nodes.0.index", 999, ["nodes[0].index: 999 is past the last"]),
    "unknown kind": ("nodes.1.kind", "attn_middle", ["nodes[1].kind: expected one of"]),
    "id of another node": ("nodes.0.id", "0.mlp_neuron.4", ["nodes[0].id: expected '0.mlp_"]),
    "edge to nowhere": ("edges.0.target", "9.q.1", ["edges[0].target: '9.q.1' is not one"]),
    "model d_model missing": ("model.d_model", None, ["model.d_model: missing"]),
}


@pytest.mark.parametrize("case", CIRCUIT_DAMAGE)
def test_damaged_circuit_file_is_one_line(tmp_path, monkeypatch, capsys, case):
    dotted, value, fragments = CIRCUIT_DAMAGE[case]
    record = small_circuit()
    if value is None:
        *parents, last = dotted.split(".")
        del (record[parents[0]] if parents else record)[last]
    else:
        set_path(record, dotted, value)
    path = tmp_path / "circuit.json"
    path.write_text(json.dumps(record))
    out = str(tmp_path / "circuit.svg")
    line = run_main(monkeypatch, capsys, "circuit", "draw", str(path), "--out", out)
    assert_names(line, "circuit.json", *fragments)


def test_undamaged_circuit_file_reads_back(tmp_path):
    (tmp_path / "circuit.json").write_text(json.dumps(small_circuit()))
    assert read_circuit(tmp_path / "circuit.json") == small_circuit()


def test_circuit_of_another_model_shape_is_refused(tiny_run, tmp_path):
    record = small_circuit()
    record["model"].update(n_layer=4, d_model=128, d_mlp=512)
    record["nodes"][2].update(id="4.final_norm.5", layer=4)
    (tmp_path / "circuit.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match="n_layer 4, d_model 128, d_mlp 512; the model at"):
        circuit_on_model(read_circuit(tmp_path / "circuit.json"), load_run(tiny_run))


# --- pairs files -----------------------------------------------------------------------------

PAIR = {"prompt_a": "x = '", "prompt_b": 'x = "', "answer_a": "'", "answer_b": '"'}


def test_line_separator_inside_a_pair_is_text_not_a_line_break(tmp_path):
    with_separator = {**PAIR, "prompt_a": "# a\u2028b\nx = '"}
    lines = [json.dumps(with_separator, ensure_ascii=False), json.dumps(PAIR)]
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    pairs = read_pairs_jsonl(tmp_path / "pairs.jsonl")
    assert [pair.prompt_a for pair in pairs] == [with_separator["prompt_a"], PAIR["prompt_a"]]


def test_malformed_pair_line_names_the_line_and_field(tmp_path):
    lines = [json.dumps({**PAIR, "prompt_a": "a\u2028b"}, ensure_ascii=False)]
    lines.append(json.dumps({**PAIR, "answer_b": 7}))
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(UserError) as error:
        read_pairs_jsonl(tmp_path / "pairs.jsonl")
    message = str(error.value)
    assert len(message.splitlines()) == 1
    assert "pairs.jsonl: malformed lines 2 (" in message
    assert "line 2: answer_b: expected a string, got 7" in message
