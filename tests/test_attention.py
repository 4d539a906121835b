"""Attention patterns, head detectors and the attention page: detectors must find heads whose
patterns are forced to be what they detect, and the page must show token text only as text."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from cli_runner import run_in_process as run_cli
from sparsecircuits.interp.attention import (
    attention_page,
    attention_patterns,
    detect_heads,
    previous_token_scores,
    random_tokens,
    top_heads,
)
from sparsecircuits.loading import resolve_checkpoint
from sparsecircuits.model import GPT, GPTConfig

SEQ_LEN = 20  # repeated sequences: two copies of 10 tokens
HOSTILE = "</script><script>alert(1)</script>&amp;"


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(
        n_layer=2, d_model=32, d_head=16, n_ctx=32, vocab_size=64, learned_positions=True
    )
    return GPT(config).eval()


def one_hot_pattern(n_pos: int, key_of_query) -> torch.Tensor:  # noqa: ANN001
    """[n_pos, n_pos] pattern in which query q looks only at key_of_query(q)."""
    pattern = torch.zeros(n_pos, n_pos)
    for query in range(n_pos):
        pattern[query, key_of_query(query)] = 1.0
    return pattern


def force_head(head: int, key_of_query):  # noqa: ANN001, ANN201
    """A hook edit that replaces one head's pattern by a one-hot pattern."""

    def edit(pattern: torch.Tensor, hook) -> torch.Tensor:  # noqa: ANN001
        forced = pattern.clone()
        forced[:, head] = one_hot_pattern(pattern.shape[-1], key_of_query)
        return forced

    return edit


def previous(query: int) -> int:
    return max(query - 1, 0)


def test_patterns_are_causal_probabilities_per_layer_and_head(model: GPT) -> None:
    patterns = attention_patterns(model, torch.arange(12))
    assert patterns.shape == (2, 2, 12, 12)
    assert torch.allclose(patterns.sum(dim=-1), torch.ones(2, 2, 12))
    assert patterns.triu(diagonal=1).abs().max() == 0


def test_a_forced_previous_token_head_ranks_first(model: GPT) -> None:
    with model.edit({"blocks.0.attn.hook_pattern": force_head(1, previous)}):
        scores = detect_heads(model, seq_len=SEQ_LEN, n_sequences=4, seed=0)
    prev = scores["previous_token"]
    assert prev.shape == (2, 2)
    assert top_heads(prev, k=1)[0][:2] == (0, 1)
    assert prev[0, 1] == pytest.approx(1.0)
    others = torch.cat([prev[0, :1], prev[1]])
    assert others.max() < 0.5  # random weights spread attention almost evenly
    assert scores["induction"][0, 1] < 0.01 and scores["duplicate_token"][0, 1] < 0.01


def test_forced_induction_and_duplicate_heads_are_told_apart(model: GPT) -> None:
    period = SEQ_LEN // 2

    def induction(query: int) -> int:  # the token after this one's first occurrence
        return query - period + 1 if query >= period else query

    def duplicate(query: int) -> int:  # this token's first occurrence
        return query - period if query >= period else query

    edits = {"blocks.1.attn.hook_pattern": force_head(0, induction)}
    with model.edit(edits), model.edit({"blocks.0.attn.hook_pattern": force_head(0, duplicate)}):
        scores = detect_heads(model, seq_len=SEQ_LEN, n_sequences=4, seed=1)
    assert top_heads(scores["induction"], k=1)[0][:2] == (1, 0)
    assert scores["induction"][1, 0] == pytest.approx(1.0)
    assert top_heads(scores["duplicate_token"], k=1)[0][:2] == (0, 0)
    assert scores["duplicate_token"][0, 0] == pytest.approx(1.0)
    assert scores["duplicate_token"][1, 0] < 0.01 and scores["induction"][0, 0] < 0.01


def test_detectors_are_seeded_and_avoid_excluded_ids(model: GPT) -> None:
    first = detect_heads(model, seq_len=8, n_sequences=3, seed=5, token_ids=range(1, 64))
    again = detect_heads(model, seq_len=8, n_sequences=3, seed=5, token_ids=range(1, 64))
    assert all(torch.equal(first[name], again[name]) for name in first)
    drawn = random_tokens(torch.arange(1, 64), 50, 16, torch.Generator().manual_seed(0))
    assert drawn.min() >= 1
    assert all(len(set(row)) == 16 for row in drawn.tolist())  # no repeats inside a sequence
    given = torch.randint(64, (2, 10), generator=torch.Generator().manual_seed(0))
    assert previous_token_scores(model, given).shape == (2, 2)


@pytest.mark.parametrize("seq_len", [3, 33])
def test_detector_lengths_outside_the_context_are_refused(model: GPT, seq_len: int) -> None:
    from sparsecircuits.errors import UserError

    with pytest.raises(UserError, match="seq-len"):
        detect_heads(model, seq_len=seq_len)


def attention_json(page: str) -> dict:
    block = re.search(
        r'<script type="application/json" id="attention-data">(.*?)</script>', page, re.S
    )
    assert block, "no JSON block in the page"
    return json.loads(block.group(1))


def test_the_page_shows_hostile_tokens_as_text_and_its_json_parses(model: GPT) -> None:
    patterns = attention_patterns(model, torch.arange(4))
    tokens = [HOSTILE, "<b>", "a\nb", '"q"']
    page = attention_page(tokens, patterns, title="<i>title</i>")
    assert "<script>alert" not in page and "<b>" not in page and "<i>" not in page
    assert "&lt;script&gt;alert(1)" in page
    # Only the page's own two script elements: the JSON block cannot be closed early.
    assert page.count("</script>") == 2
    data = attention_json(page)
    assert data["tokens"] == tokens
    assert (data["n_layer"], data["n_head"]) == (2, 2)
    rows = data["patterns"][1][0]
    assert [len(row) for row in rows] == [1, 2, 3, 4]  # each query and the keys before it
    assert rows[3] == pytest.approx(patterns[1, 0, 3].tolist(), abs=1e-4)


def test_the_page_works_in_a_browser(model: GPT, tmp_path: Path) -> None:
    from browser import rendered_dom

    patterns = attention_patterns(model, torch.arange(5))
    page = tmp_path / "attention.html"
    page.write_text(attention_page([HOSTILE, "b", "c", "d", "e"], patterns, "t"), "utf-8")
    dom = rendered_dom(page)
    assert "<script>alert" not in dom.split('id="attention-data"')[0]
    assert dom.count("<option") == 4  # two layers, two heads, filled in by the script
    assert "rgba(214, 39, 40" in dom  # the last token's attention coloured the tokens
    assert "most attention to position" in dom


def test_attention_command_writes_the_page_and_its_numbers(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "view"
    result = run_cli(
        "attention", str(tiny_run), "--prompt", "def f(x):\n    return x", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    data = json.loads((out / "attention.json").read_text())
    assert data == attention_json((out / "attention.html").read_text())
    assert "".join(data["tokens"]) == "def f(x):\n    return x"
    assert len(data["patterns"]) == 2  # the tiny preset's layers


def test_heads_command_writes_every_detector_and_prints_the_top_heads(
    tiny_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "heads"
    result = run_cli(
        "heads", str(tiny_run), "--out", str(out), "--seq-len", "16", "--sequences", "4"
    )
    assert result.returncode == 0, result.stderr
    for name in ("previous_token", "duplicate_token", "induction"):
        assert {path.suffix for path in out.glob(f"{name}.*")} == {".png", ".html", ".json"}
        grid = json.loads((out / f"{name}.json").read_text())
        assert grid["rows"] == ["layer 0", "layer 1"]
        assert all(0 <= value <= 1 for row in grid["values"] for value in row)
        line = next(line for line in result.stdout.splitlines() if line.strip().startswith(name))
        assert len(re.findall(r"\d+\.\d+ [01]\.\d{3}", line)) == 3


def run_without_tokenizer(tiny_run: Path, tmp_path: Path) -> Path:
    """The tiny run as an imported model without its tokenizer files."""
    folder = tmp_path / "imported"
    shutil.copytree(resolve_checkpoint(tiny_run), folder)
    (folder / "tokenizer.json").unlink()
    config = json.loads((folder / "config.json").read_text())
    config["source"] = {"kind": "test"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    "case, fragment",
    [("empty", "prompt is empty"), ("long", "tokens long"), ("no tokenizer", "no tokenizer")],
)
def test_bad_prompts_end_in_one_line(
    tiny_run: Path, tmp_path: Path, case: str, fragment: str
) -> None:
    run, prompt = tiny_run, {"empty": "", "long": "x = 1\n" * 200}.get(case, "x = 1")
    if case == "no tokenizer":
        run = run_without_tokenizer(tiny_run, tmp_path)
    result = run_cli("attention", str(run), "--prompt", prompt, "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and fragment in result.stderr
    assert not (tmp_path / "o" / "attention.html").exists()


def test_heads_run_on_a_model_without_tokenizer(tiny_run: Path, tmp_path: Path) -> None:
    run = run_without_tokenizer(tiny_run, tmp_path)
    result = run_cli("heads", str(run), "--out", str(tmp_path / "h"), "--sequences", "2")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "h" / "induction.png").is_file()
