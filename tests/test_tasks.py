"""The task suite, pair encoding, the task loss, pair files and the `tasks` commands."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from tokenizers import Tokenizer

from sparsecircuits.data import CodeTokenizer
from sparsecircuits.errors import UserError
from sparsecircuits.loading import save_checkpoint
from sparsecircuits.model import GPT, GPTConfig
from sparsecircuits.tasks import (
    CONTROL_TASKS,
    TASKS,
    TaskBatch,
    TaskPair,
    encode_pairs,
    evaluate_task,
    read_pairs_jsonl,
    task_accuracy,
    task_losses,
    task_pairs,
    write_pairs_jsonl,
)
from sparsecircuits.tasks.commands import tasks
from sparsecircuits.tasks.templates_context import scope

SPEC_TASKS = {
    "single_double_quote", "final_kwarg", "set_or_string", "set_or_string_fixedvarname",
    "class_init", "with_as", "bracket_brace", "with_open", "bracket_counting", "for_while",
    "else_elif", "fstring_brace", "if_ternary", "var_swap", "indent_for", "lambda_func",
    "if_equals", "enumerate_range", "var_if", "while_return_true",
}  # fmt: skip
EXTRA_TASKS = {"single_double_quote_mixed"}  # harder variants, not in the paper
N_PAIRS = 48  # per task: enough to see a skip rate, cheap enough for all 21 tasks
REFERENCE_TOKENIZER = Path(__file__).parent.parent / "models/reference-sparse/tokenizer.json"


@pytest.fixture(scope="module")
def pairs_by_task() -> dict[str, list[TaskPair]]:
    return {name: task_pairs(name, "test", N_PAIRS) for name in TASKS}


def test_registry_holds_the_twenty_spec_tasks_and_the_variant() -> None:
    assert set(TASKS) == SPEC_TASKS | EXTRA_TASKS and len(TASKS) == 21
    assert all(task.description for task in TASKS.values())
    names = list(TASKS)
    assert names.index("single_double_quote_mixed") == names.index("single_double_quote") + 1


def test_single_double_quote_is_the_papers_form() -> None:
    """One quote in each prompt, the opening token (' or (", and answers ') and ")."""
    tokenizer = Tokenizer.from_file(str(REFERENCE_TOKENIZER))
    calls = set()
    for seed in range(300):
        pair = TASKS["single_double_quote"].make_pair(random.Random(seed))
        assert pair.prompt_b == pair.prompt_a.replace("'", '"'), seed
        assert (pair.answer_a, pair.answer_b) == ("')\n", '")\n'), seed
        for prompt, answer, quote in [
            (pair.prompt_a, pair.answer_a, "'"),
            (pair.prompt_b, pair.answer_b, '"'),
        ]:
            assert prompt.count("'") + prompt.count('"') == 1, (seed, prompt)
            prompt_tokens = tokenizer.encode(prompt).tokens
            assert [token for token in prompt_tokens if quote in token] == ["(" + quote], seed
            full_tokens = tokenizer.encode(prompt + answer).tokens
            assert full_tokens[: len(prompt_tokens)] == prompt_tokens, seed
            assert full_tokens[len(prompt_tokens)] == quote + ")", seed
        calls.add(re.match(r"\s*(\w+)", pair.prompt_a.splitlines()[-1]).group(1))
    assert calls >= {"print", "raise", "logger", "sys", "return", "self"}  # and name.append(


def test_strings_false_leaves_no_quote_in_the_preamble() -> None:
    with_docstrings = 0
    for seed in range(300):
        assert not re.search("['\"]", scope(random.Random(seed), strings=False).code), seed
        code = scope(random.Random(seed), strings=False, docstrings=True).code
        with_docstrings += '"""' in code
    assert with_docstrings > 50  # the mixed quote task keeps docstrings as distractors


def test_single_double_quote_mixed_keeps_the_harder_forms() -> None:
    pairs = task_pairs("single_double_quote_mixed", "test", 100)
    assert {pair.answer_a[:2] for pair in pairs} >= {"'\n", "')", "':"}
    assert any('"""' in pair.prompt_a for pair in pairs)
    assert any(" '" in pair.prompt_a.splitlines()[-1] for pair in pairs)  # ' as its own token


def test_bracket_brace_answers_are_a_bare_colon_or_comma(pairs_by_task: dict) -> None:
    for pair in pairs_by_task["bracket_brace"]:  # no string key whose quote merges with them
        assert pair.answer_a.startswith(": ") and pair.answer_b.startswith(", "), pair


def test_pairs_differ_within_and_are_deterministic(pairs_by_task: dict) -> None:
    for name, pairs in pairs_by_task.items():
        assert len(pairs) == N_PAIRS
        assert task_pairs(name, "test", N_PAIRS) == pairs, name
        assert task_pairs(name, "test", 5) == pairs[:5], name  # more pairs only extend a split
        assert task_pairs(name, "test", N_PAIRS, seed=1) != pairs, name
        assert len({(pair.prompt_a, pair.prompt_b) for pair in pairs}) == N_PAIRS, name
        for pair in pairs:
            assert pair.prompt_a != pair.prompt_b, name
            assert pair.answer_a != pair.answer_b, name


def test_train_and_test_splits_share_no_prompt(pairs_by_task: dict) -> None:
    for name, pairs in pairs_by_task.items():
        train = task_pairs(name, "train", 4 * N_PAIRS)
        train_prompts = {prompt for pair in train for prompt in (pair.prompt_a, pair.prompt_b)}
        test_prompts = {prompt for pair in pairs for prompt in (pair.prompt_a, pair.prompt_b)}
        assert not train_prompts & test_prompts, name


def test_templates_vary_the_surrounding_code(pairs_by_task: dict) -> None:
    for name, pairs in pairs_by_task.items():
        assert len({pair.prompt_a.splitlines()[0] for pair in pairs}) > 5, name
        assert len({len(pair.prompt_a) for pair in pairs}) > 10, name


def test_bad_task_split_or_count_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown task nope .see `sparsecircuits tasks list`"):
        task_pairs("nope")
    with pytest.raises(UserError, match="split"):
        task_pairs("var_swap", split="nope")
    with pytest.raises(UserError, match="at least 1"):
        task_pairs("var_swap", n=0)


def test_few_pairs_are_skipped_with_a_stdlib_tokenizer(
    stdlib_tokenizer: CodeTokenizer, pairs_by_task: dict
) -> None:
    for name, pairs in pairs_by_task.items():
        encoded = encode_pairs(pairs, stdlib_tokenizer, n_ctx=256)
        assert encoded.skipped["too_long"] == 0, name  # every prompt is well under 200 tokens
        assert encoded.batch.n_pairs >= 0.85 * len(pairs), (name, encoded.skipped)


def test_encode_pairs_pads_right_and_swaps_answers(stdlib_tokenizer: CodeTokenizer) -> None:
    pair = TaskPair("x = 'hi", 'message = "hello world', "')\n", '")\n')
    encoded = encode_pairs([pair], stdlib_tokenizer, n_ctx=64)
    batch = encoded.batch
    short, long = stdlib_tokenizer.encode(pair.prompt_a), stdlib_tokenizer.encode(pair.prompt_b)
    answer_a = stdlib_tokenizer.encode(pair.prompt_a + pair.answer_a)[len(short)]
    answer_b = stdlib_tokenizer.encode(pair.prompt_b + pair.answer_b)[len(long)]
    assert encoded.skipped == {"not_prefix": 0, "same_answer": 0, "too_long": 0}
    assert batch.n_pairs == 1 and batch.tokens.dtype == torch.int64
    assert batch.tokens.shape == (2, max(len(short), len(long)))
    assert batch.tokens[0, : len(short)].tolist() == short
    assert batch.tokens[0, len(short) :].eq(stdlib_tokenizer.eot_id).all()
    assert batch.tokens[1].tolist() == long
    assert batch.last.tolist() == [len(short) - 1, len(long) - 1]
    assert batch.correct.tolist() == [answer_a, answer_b]
    assert batch.wrong.tolist() == [answer_b, answer_a]


def test_encode_pairs_counts_what_it_skips(stdlib_tokenizer: CodeTokenizer) -> None:
    good = TaskPair("x = 'hi", 'x = "hi', "')", '")')
    merged = TaskPair("    return ", "    yield ", "self\n", "None\n")  # " self" is one token
    same = TaskPair("x = 'hi", "y = 'hi", "')", "')")
    long = TaskPair("x = 'hi" + " there" * 80, 'x = "hi', "')", '")')
    encoded = encode_pairs([good, merged, same, long], stdlib_tokenizer, n_ctx=64)
    assert encoded.batch.n_pairs == 1
    assert encoded.skipped == {"not_prefix": 1, "same_answer": 1, "too_long": 1}
    with pytest.raises(UserError, match="none of 2 pairs is usable: 1 .* 1 "):
        encode_pairs([merged, same], stdlib_tokenizer, n_ctx=64)


def test_subset_keeps_a_and_b_together(stdlib_tokenizer: CodeTokenizer) -> None:
    pairs = task_pairs("var_swap", "test", 6)
    batch = encode_pairs(pairs, stdlib_tokenizer, n_ctx=256).batch
    part = batch.subset(range(2, 4))
    n = batch.n_pairs
    assert part.n_pairs == 2
    assert part.correct.tolist() == batch.correct[[2, 3, n + 2, n + 3]].tolist()
    assert torch.equal(part.tokens, batch.tokens[[2, 3, n + 2, n + 3]])
    assert batch.subset(torch.tensor([0])).wrong.tolist() == [batch.wrong[0], batch.wrong[n]]


def hand_made_batch() -> TaskBatch:
    return TaskBatch(
        tokens=torch.zeros(4, 3, dtype=torch.int64),
        last=torch.tensor([2, 1, 0, 2]),
        correct=torch.tensor([5, 7, 1, 3]),
        wrong=torch.tensor([7, 5, 3, 1]),
        n_pairs=2,
    )


def test_task_loss_is_the_two_way_softmax_at_the_last_token() -> None:
    batch = hand_made_batch()
    logits = torch.randn(4, 3, 10)
    logits[0, 2, 5], logits[0, 2, 7] = 2.0, 0.0  # correct ahead by 2
    logits[1, 1, 7], logits[1, 1, 5] = 1.0, 1.0  # a tie
    logits[2, 0, 1], logits[2, 0, 3] = -1.0, 2.0  # wrong ahead by 3
    logits[3, 2, 3], logits[3, 2, 1] = 5.0, 5.5
    expected = [math.log1p(math.exp(-2)), math.log(2), math.log1p(math.exp(3))]
    expected.append(math.log1p(math.exp(0.5)))
    losses = task_losses(logits, batch)
    assert losses.shape == (4,)
    assert losses.tolist() == pytest.approx(expected, rel=1e-5)
    assert task_accuracy(logits, batch).tolist() == [1.0, 0.0, 0.0, 0.0]
    last_logits = logits[torch.arange(4), batch.last]  # [2n, V] works too
    assert torch.allclose(task_losses(last_logits, batch), losses)


def test_task_loss_has_a_gradient() -> None:
    logits = torch.zeros(4, 3, 10, requires_grad=True)
    task_losses(logits, hand_made_batch()).sum().backward()
    assert logits.grad[0, 2, 5] == pytest.approx(-0.5) and logits.grad[0, 2, 7] == pytest.approx(
        0.5
    )


def tiny_gpt(tokenizer: CodeTokenizer, n_ctx: int = 256) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, n_layer=1, d_model=32, n_ctx=n_ctx)
    return GPT(config).eval()


def test_evaluate_task_matches_the_loss_in_one_batch(stdlib_tokenizer: CodeTokenizer) -> None:
    model = tiny_gpt(stdlib_tokenizer)
    batch = encode_pairs(task_pairs("for_while", "test", 10), stdlib_tokenizer, 256).batch
    with torch.no_grad():
        logits = model(batch.tokens)
    one_pass = evaluate_task(model, batch, batch_size=64)
    assert one_pass["n"] == batch.n_pairs
    assert one_pass["loss"] == pytest.approx(task_losses(logits, batch).mean().item(), rel=1e-5)
    assert one_pass["accuracy"] == pytest.approx(task_accuracy(logits, batch).mean().item())
    in_chunks = evaluate_task(model, batch, batch_size=3)
    assert in_chunks["loss"] == pytest.approx(one_pass["loss"], rel=1e-5)
    assert in_chunks["accuracy"] == pytest.approx(one_pass["accuracy"])


def test_pairs_jsonl_round_trip_and_errors(tmp_path: Path) -> None:
    pairs = task_pairs("with_open", "test", 3)
    write_pairs_jsonl(pairs, tmp_path / "pairs.jsonl")
    assert read_pairs_jsonl(tmp_path / "pairs.jsonl") == pairs

    good = json.dumps({"prompt_a": "a", "prompt_b": "b", "answer_a": "x", "answer_b": "y"})
    lines = [good, "", "not json", good, json.dumps({"prompt_a": "a"}), good]
    lines.append(json.dumps({"prompt_a": 1, "prompt_b": "b", "answer_a": "x", "answer_b": "y"}))
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"bad.jsonl: malformed lines 3, 5, 7 \(need prompt_a"):
        read_pairs_jsonl(tmp_path / "bad.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(UserError, match="no pairs"):
        read_pairs_jsonl(tmp_path / "empty.jsonl")
    with pytest.raises(UserError, match="not found"):
        read_pairs_jsonl(tmp_path / "missing.jsonl")


def test_tasks_list_json_names_every_task() -> None:
    result = CliRunner().invoke(tasks, ["list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert {row["name"] for row in rows} == SPEC_TASKS | EXTRA_TASKS | set(CONTROL_TASKS)
    assert {row["name"] for row in rows if row["control"]} == {"nonsense_name_split"}
    table = CliRunner().invoke(tasks, ["list"])
    assert table.exit_code == 0 and "bracket_counting" in table.output


def test_tasks_show_prints_pairs_and_answer_tokens(
    tmp_path: Path, stdlib_tokenizer: CodeTokenizer
) -> None:
    stdlib_tokenizer.save(tmp_path / "tokenizer.json")
    arguments = ["show", "single_double_quote", "--n", "2", "--tokenizer"]
    result = CliRunner().invoke(tasks, [*arguments, str(tmp_path / "tokenizer.json")])
    assert result.exit_code == 0, result.output
    assert result.output.count("--- prompt A") == 2
    assert len(re.findall(r"token \d+ ['\"]", result.output)) == 4  # id and repr, A and B
    unknown = CliRunner().invoke(tasks, ["show", "nope"])
    assert isinstance(unknown.exception, UserError)
    both = CliRunner().invoke(tasks, ["show", "var_if", "--run", "x", "--tokenizer", "y"])
    assert isinstance(both.exception, UserError)


@pytest.fixture(scope="module")
def tiny_run_dir(tmp_path_factory: pytest.TempPathFactory, stdlib_tokenizer: CodeTokenizer) -> Path:
    run_dir = tmp_path_factory.mktemp("tasks") / "run"
    model = tiny_gpt(stdlib_tokenizer, n_ctx=64)
    config = {"model": model.config.to_dict(), "train": {}, "data": {}}
    save_checkpoint(run_dir, model, stdlib_tokenizer, config, {"step": 0})
    return run_dir


def test_tasks_eval_prints_json_for_tasks_and_pair_files(
    tiny_run_dir: Path, tmp_path: Path
) -> None:
    write_pairs_jsonl(task_pairs("var_if", "test", 8), tmp_path / "mine.jsonl")
    arguments = ["eval", str(tiny_run_dir), "--task", "for_while", "--task", "class_init"]
    arguments += ["--pairs", str(tmp_path / "mine.jsonl"), "--n", "12", "--json"]
    result = CliRunner().invoke(tasks, arguments)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [row["task"] for row in rows] == ["for_while", "class_init", "mine"]
    for row in rows:
        assert 0 < row["n"] <= 12 and math.isfinite(row["loss"]) and 0 <= row["accuracy"] <= 1
        assert row["n"] + sum(row["skipped"].values()) == (8 if row["task"] == "mine" else 12)
    table = CliRunner().invoke(tasks, ["eval", str(tiny_run_dir), "--task", "var_swap", "--n", "4"])
    assert table.exit_code == 0 and "var_swap" in table.output and "nats" in table.output


def test_tasks_eval_rejects_unknown_tasks_before_loading(tmp_path: Path) -> None:
    result = CliRunner().invoke(tasks, ["eval", str(tmp_path / "no-run"), "--task", "nope"])
    assert isinstance(result.exception, UserError) and "unknown task nope" in str(result.exception)


def test_tasks_eval_explains_when_no_pair_fits(tiny_run_dir: Path, tmp_path: Path) -> None:
    long = TaskPair("x = 'hi" + " there" * 80, 'x = "hi' + " there" * 80, "')", '")')
    write_pairs_jsonl([long, long], tmp_path / "long.jsonl")
    arguments = ["eval", str(tiny_run_dir), "--pairs", str(tmp_path / "long.jsonl")]
    result = CliRunner().invoke(tasks, arguments)
    assert isinstance(result.exception, UserError)
    assert "2 have a prompt longer than n_ctx 64" in str(result.exception)
