"""Neuron explanations: units, activation records, ..."""

from __future__ import annotations

import itertools
import json
import math
import sqlite3
from pathlib import Path

import pytest
import torch

import sparsecircuits
from cli_runner import run_in_process
from sparsecircuits.errors import UserError
from sparsecircuits.explain.baselines import TokenTableBaseline, WeightBaseline
from sparsecircuits.explain.directions import ascend, unit_vector
from sparsecircuits.explain.offline import Evidence, OfflineExplainer, OfflineSimulator
from sparsecircuits.explain.pipeline import token_texts
from sparsecircuits.explain.puzzles import PUZZLE_SETS, SHIPPED
from sparsecircuits.explain.records import HALVES, Excerpt, RecordSettings, collect_records
from sparsecircuits.explain.rules import Rules, parse_rules, simulate_rules
from sparsecircuits.explain.scoring import (
    correlation,
    detection_score,
    explained_variance,
    fuzzing_score,
    to_scale,
)
from sparsecircuits.explain.units import Unit, layer_units, parse_indices, unit_activations
from sparsecircuits.loading import Run
from sparsecircuits.loading.activations import iter_activations

SETTINGS = RecordSettings(
    n_tokens=16 * 400, excerpt_tokens=16, top=5, random=6, quantile_bins=3, per_bin=2, pilot=40,
    batch_size=32, split="val",
)  # fmt: skip


@pytest.fixture(scope="module")
def run(tiny_run: Path) -> Run:
    return sparsecircuits.load(tiny_run)


@pytest.fixture(scope="module")
def units(run) -> list[Unit]:
    return layer_units(run.model_config, 1, "mlp", range(8)) + [Unit(0, "q", 5)]


@pytest.fixture(scope="module")
def records(run, units):
    return collect_records(run, units, SETTINGS, log=lambda line: None)


def test_unit_names_round_trip_and_bad_ones_are_one_line(run):
    assert Unit.parse("1.mlp.17") == Unit(1, "mlp", 17)
    assert Unit.parse("0.mlp_neuron.3") == Unit(0, "mlp", 3)  # a circuit node id
    assert Unit(0, "q", 5).hook == "blocks.0.attn.hook_q"
    assert parse_indices("0-3,9", 10) == [0, 1, 2, 3, 9]
    assert parse_indices("007", 10) == [7]
    for huge in ("0-" + "9" * 40, "10", "3-10", "1" + "0" * 5000):
        with pytest.raises(UserError, match="channels 0..9"):
            parse_indices(huge, 10)
    for bad, fragment in [("1.mlp", "LAYER.KIND.INDEX"), ("1.gate.2", "unknown unit kind")]:
        with pytest.raises(UserError, match=fragment):
            Unit.parse(bad)
    with pytest.raises(UserError, match="out of range"):
        layer_units(run.model_config, 7, "mlp", None)
    with pytest.raises(UserError, match="channels 0..127"):
        layer_units(run.model_config, 0, "mlp", [128])


def test_unit_activations_pick_the_right_channels(run, units):
    tokens = torch.randint(1, 100, (2, 16), generator=torch.Generator().manual_seed(0))
    _, cache = run.model.run_with_cache(tokens, [unit.hook for unit in units])
    acts = unit_activations(cache, units)
    assert acts.shape == (2, 16, len(units))
    torch.testing.assert_close(acts[..., 3], cache["blocks.1.mlp.hook_post"][..., 3])
    q = cache["blocks.0.attn.hook_q"]  # [batch, pos, head, d_head]: channel 5 = head 0, dim 5
    torch.testing.assert_close(acts[..., -1], q[:, :, 0, 5])


def test_records_keep_the_highest_excerpts_and_never_mix_halves(run, records):
    eot = run.tokenizer.eot_id
    for unit_records in records:
        offsets = {}
        for half in HALVES:
            top = unit_records.top[half]
            assert len(top) == SETTINGS.top
            maxima = [excerpt.max for excerpt in top]
            assert maxima == sorted(maxima, reverse=True)
            others = unit_records.random[half] + sum(unit_records.quantiles[half], [])
            assert all(excerpt.max <= maxima[0] + 1e-6 for excerpt in others)
            excerpts = top + others
            assert all(eot not in excerpt.tokens[:-1] for excerpt in excerpts)
            offsets[half] = {excerpt.offset for excerpt in excerpts}
        assert not offsets["explain"] & offsets["score"]


def test_records_hold_the_true_activations_of_their_excerpts(run, units, records):
    excerpt = records[2].top["score"][0]
    tokens = torch.tensor([excerpt.tokens])
    _, cache = run.model.run_with_cache(tokens, [units[2].hook])
    recomputed = unit_activations(cache, [units[2]])[0, :, 0]
    torch.testing.assert_close(torch.tensor(excerpt.activations), recomputed)
    corpus_tokens = run_corpus_tokens(run, excerpt.offset, len(excerpt.tokens))
    assert excerpt.tokens == corpus_tokens


def run_corpus_tokens(run: Run, offset: int, length: int) -> list[int]:
    from sparsecircuits.loading.activations import run_corpus

    return [int(token) for token in run_corpus(run).val[offset : offset + length]]


def test_record_statistics_match_a_direct_computation(run, units, records):
    values = []
    for batch in iter_activations(
        run, units[0].hook, SETTINGS.n_tokens, 64, order="shuffled", window=16
    ):
        keep = ~(batch.tokens[:, :-1] == run.tokenizer.eot_id).any(dim=1)
        values.append(unit_activations(batch.activations, units[:1])[keep].flatten())
    flat = torch.cat(values).double()
    stats = records[0].stats
    assert stats["tokens"] == len(flat)
    assert math.isclose(stats["mean"], float(flat.mean()), rel_tol=1e-6, abs_tol=1e-9)
    assert math.isclose(stats["variance"], float(flat.var(unbiased=False)), rel_tol=1e-5)
    assert math.isclose(stats["max"], float(flat.max()), rel_tol=1e-6)
    assert 0 < stats["fraction_nonzero"] <= 1


def test_quantile_bins_hold_excerpts_of_rising_activation(records):
    for unit_records in records:
        bins = unit_records.quantiles["explain"]
        assert len(bins) == SETTINGS.quantile_bins
        means = [sum(e.max for e in b) / len(b) for b in bins if b]
        assert means == sorted(means)
    filled = [len(b) for r in records for b in r.quantiles["score"]]
    assert sum(filled) >= len(records) * SETTINGS.per_bin  # not vacuous


def test_an_interrupted_pass_resumes_to_the_same_records(run, units, records, tmp_path):
    folder = tmp_path / "records"
    collect_records(run, units, SETTINGS, folder, save_every=1, max_batches=3, log=print)
    resumed = collect_records(run, units, SETTINGS, folder, log=print)
    for before, after in zip(records, resumed, strict=True):
        assert before.top == after.top and before.random == after.random
        assert before.quantiles == after.quantiles
        assert before.stats == pytest.approx(after.stats)
    with pytest.raises(UserError, match="other units or settings"):
        collect_records(run, units[:2], SETTINGS, folder)


# --- the quoted-token grammar, the offline simulator and the scores --------------------------


def test_rules_round_trip_through_their_text():
    rules = Rules([" self", "cls"], after=["("], before=[])
    text = rules.render()
    assert text == 'the tokens " self" or "cls", after "("'
    assert parse_rules(text) == rules
    assert parse_rules(Rules(after=["def"]).render()) == Rules(after=["def"])
    tricky = Rules(['"', "\n    "], before=[")"])
    assert parse_rules(tricky.render()) == tricky


def test_rules_read_tokens_an_llm_quoted_in_prose():
    rules = parse_rules('Fires on "import" (and sometimes "from") right after "\\n".')
    assert rules == Rules(["import", "from"], after=["\n"])
    assert parse_rules("words related to colors").empty()


def test_simulated_rules_follow_their_context():
    tokens = ["x", "(", " self", ",", " self", " cls"]
    predicted = simulate_rules(Rules([" self", " cls"], after=["("]), tokens)
    assert predicted[2] == 10  # the first target, in context
    assert 0 < predicted[4] < predicted[2]  # out of context
    assert 0 < predicted[5] < predicted[4]  # the second target, out of context
    assert predicted[0] == predicted[1] == predicted[3] == 0
    after_only = simulate_rules(Rules(after=["("]), tokens)
    assert after_only == [0, 0, 10, 0, 0, 0]
    assert simulate_rules(Rules(["Self"]), ["self", " Self", "Self"]) == [7.0, 9.0, 10.0]


def excerpts_of(*texts: str) -> tuple[list[list[str]], list[list[float]]]:
    """Hand-built excerpts: tokens separated by "|", the active ones marked with "^"."""
    tokens = [[token.removesuffix("^") for token in text.split("|")] for text in texts]
    active = [[10.0 if token.endswith("^") else 0.0 for token in text.split("|")] for text in texts]
    return tokens, active


# (true explanation, false ones, excerpts): one per kind of cue the prose simulator reads.
PROSE_CASES = {
    "next token": (
        "the word 'to' is likely to come next",
        ["the word 'to' itself", "the word right after 'to'", "verbs in general"],
        ["I| want^| to| go| home", "We| are| going^| to| win", "He| went^| to| the| shop"],
    ),
    "previous token": (
        "the word right after 'the'",
        ["the word 'the' itself", "the word just before 'the'"],
        ["I| saw| the| cat^| and| the| dog^", "the| sun^| rose| over| the| hill^"],
    ),
    "inside brackets": (
        "anything between square brackets",
        ["the square brackets themselves", "numbers"],
        ["x| =| [|1^|,^| 2^|]", "f|(|1|,| 2|)", "see| [|page^| 4^|]"],
    ),
    "string literal": (
        "the text of string literals in Python code",
        ["quotation marks", "variable names"],
        ['name| =| "|Alice^|"', "x| =| 42", 'print|(|"|hello^| world^|"|)'],
    ),
    "comment": (
        "text in a Python comment",
        ["the # symbol", "Python keywords"],
        ["x| =| 1| #| set^| the^| counter^|\n|y| =| 2", "for| i| in| range|(|3|)|:|\n|    |pass"],
    ),
    "start of line": (
        "the first word on a new line (after any indentation)",
        ["indentation whitespace", "the last token on a line", "Python keywords"],
        ["\n|import^| os|\n|import^| sys", "\n|def^| f|(|)|:|\n|    |return^| 1", "x| =| 1| if| a"],
    ),
    "end of sentence": (
        "the last word of a sentence, just before the full stop",
        ["the full stop", "the first word of a sentence"],
        ["We| went| home^|.| It| was| late^|.", "version| =| 3|.|14"],
    ),
    "repeated phrase": (
        "the second copy of a phrase that appeared earlier",
        ["any single word that repeats", "the first time a phrase appears"],
        ["press| the| green| button|.| then| press^| the^| green^| button^", "a| red| car| a| car"],
    ),
    "wrong arithmetic": (
        "wrong answers to simple arithmetic",
        ["the result of an arithmetic sum", "numbers", "the equals sign"],
        [
            "2| +| 2| =| 5^",
            "3| +| 4| =| 7",
            "half| of| 10| is| 6^",
            "ten| times| ten| is| a| hundred",
        ],
    ),
    "plural nouns": (
        "plural nouns",
        ["nouns of any kind", "verbs ending in s", "words ending in the letter s"],
        [
            "The| cats^| saw| the| dog",
            "She| runs| to| the| books^",
            "three| children^| sang| songs^",
        ],
    ),
    "capitals": (
        "capitalized words",
        ["numbers", "the last word of a sentence"],
        ["we| met| Alice^| and| Bob^| in| Paris^|.", "it| cost| 5| pounds|."],
    ),
    "examples": (
        "words like maybe or perhaps",
        ["the word 'not' itself", "modal verbs like must and should"],
        ["Maybe^| we| should| go", "it| might| rain|,| perhaps^|,| or| not", "you| must| stay"],
    ),
    "spelling": (
        "words ending in 'ing'",
        ["verbs", "the word right after 'are'"],
        ["we| are| going^| home| singing^| songs", "they| are| here| to| sing"],
    ),
    "variable reuse": (
        "a variable name being used again after it was defined",
        ["names of variables being assigned", "Python keywords", "function names"],
        ["count| =| 0|\n|count^| +=| 1", "name| =| input|(|)|\n|print|(|name^|)"],
    ),
    "function defined": (
        "the name of a function being defined",
        ["function calls", "Python keywords"],
        ["def| area^|(|r|)|:|\n|    |return| pi|(|)", "x| =| area|(|2|)"],
    ),
    "dictionary keys": (
        "dictionary keys",
        ["strings in quotes", "numbers"],
        ['d| =| {|"|a^|"|:| 1|,| "|b^|"|:| 2|}', 'print|(|"|hi|"|)'],
    ),
    "keyword arguments": (
        "keyword arguments in a function call",
        ["variable names", "numbers in a function call"],
        ["f|(|x|,| key^|=|1|)", "key| =| 2", "g|(|a|,| 3|)"],
    ),
    "word doubled": (
        "a word that repeats the word just before it",
        ["any single word that repeats", "the word 'the'"],
        ["I| saw| the| the^| cat", "the| dog| and| the| cat| ran| ran^"],
    ),
    "sentence start": (
        "capitalized words at the start of a sentence",
        ["capitalized words", "the first word of a sentence"],
        ["The^| cat| met| Bob|.| It^| was| late|.| and| then"],
    ),
    "word sense": (  # the one case that needs the sentence-embedding model
        "the word 'bat' meaning the flying animal, not sports equipment",
        ["the word bat in any sense", "words about sports"],
        [
            "A| bat^| flew| out| of| the| dark| cave",
            "He| swung| the| bat| and| hit| the| ball",
            "The| bat^| hunts| insects| at| night",
            "a| cricket| bat| made| of| willow",
        ],
    ),
}


@pytest.mark.parametrize("case", list(PROSE_CASES))
def test_prose_explanations_are_read_for_what_they_say(case):
    """Each kind of cue: the true explanation, simulated offline, scores above every false
    one on excerpts built so that only the true reading fits."""
    truth, false, texts = PROSE_CASES[case]
    tokens, active = excerpts_of(*texts)
    simulator = OfflineSimulator()
    true_score = correlation(active, simulator.simulate(truth, tokens))
    false_scores = {text: correlation(active, simulator.simulate(text, tokens)) for text in false}
    assert true_score is not None and true_score > 0.6, true_score
    assert all(score is None or score < true_score for score in false_scores.values()), (
        true_score,
        false_scores,
    )


def test_explanations_in_the_token_grammar_still_read_by_the_grammar():
    tokens = [["x", "(", " self", ",", " self"]]
    simulator = OfflineSimulator()
    assert simulator.simulate('the token " self", after "("', tokens) == [[0, 0, 10, 0, 3.0]]
    # The same token named in prose: every " self" counts, wherever it stands.
    assert simulator.simulate("the word 'self'", tokens) == [[0, 0, 10, 0, 10]]


def test_correlation_and_explained_variance():
    true = [[0, 0, 5, 0], [1, 0, 0, 9]]
    assert correlation(true, true) == pytest.approx(1.0)
    assert explained_variance(true, [[0, 0, 10, 0], [2, 0, 0, 18]]) == pytest.approx(1.0)
    # The best affine calibration: explained variance is r squared, not 2r - 1 ...
    noisy = [[0, 1, 4, 0], [3, 0, 1, 7]]
    r = correlation(true, noisy)
    assert explained_variance(true, noisy) == pytest.approx(r * r)
    assert explained_variance(true, noisy) != pytest.approx(2 * r - 1)
    # ... and a calibration never turns an explanation upside down.
    assert explained_variance(true, [[-v for v in row] for row in true]) == pytest.approx(0.0)
    assert correlation(true, [[3, 3, 3, 3], [3, 3, 3, 3]]) == 0.0
    assert correlation([[0, 0], [0, 0]], [[1, 2], [3, 4]]) is None  # nothing to predict
    anti = correlation(true, [[-v for v in row] for row in true])
    assert anti == pytest.approx(-1.0)
    assert to_scale([-1.0, 0.0, 2.5, 4.99, 5.0], 5.0) == [0, 0, 5, 9, 10]


def test_detection_and_fuzzing_reward_a_simulation_that_knows_where_the_unit_fires():
    true = [[0, 9, 0, 0], [0, 0, 0, 8], [0, 0, 0, 0], [0, 0, 0, 0]]
    good = [[0, 8, 0, 0], [0, 0, 0, 9], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert detection_score(true, good, 10) == 1.0
    assert fuzzing_score(true, good, 10) == 1.0
    wrong = [[9, 0, 0, 0], [0, 9, 0, 0], [0, 0, 9, 0], [0, 0, 0, 9]]
    assert fuzzing_score(true, wrong, 10) <= 0.5


def test_offline_explainer_recovers_a_planted_token_rule(run):
    """A synthetic unit that fires on one token after another: the explainer, reading the
    explain half only, names them, and the explanation scores well on other excerpts."""
    texts = token_texts(run)
    stream = next(iter_activations(run, "blocks.0.hook_resid_post", 16 * 512, 512, window=16))
    target, context = most_common_bigram(stream.tokens)

    def planted(tokens: list[int]) -> list[float]:
        return [
            5.0 if i > 0 and t == target and tokens[i - 1] == context else 0.0
            for i, t in enumerate(tokens)
        ]

    excerpts = [Excerpt(row.tolist(), planted(row.tolist()), 0) for row in stream.tokens]
    firing = [e for e in excerpts if max(e.activations) > 0]
    quiet = [e for e in excerpts if max(e.activations) == 0]
    evidence = Evidence("planted", firing[:10], quiet[:60], texts, 5.0)
    explanation = OfflineExplainer().explain(evidence)
    rules = parse_rules(explanation)
    assert texts[target] in rules.targets or texts[context] in rules.after, explanation
    held_out = firing[10:] + quiet[60:300]
    simulated = OfflineSimulator().simulate(
        explanation, [[texts[t] for t in e.tokens] for e in held_out]
    )
    assert correlation([e.activations for e in held_out], simulated) > 0.7


def most_common_bigram(tokens: torch.Tensor) -> tuple[int, int]:
    pairs: dict[tuple[int, int], int] = {}
    for row in tokens.tolist():
        for before, after in itertools.pairwise(row):
            pairs[(after, before)] = pairs.get((after, before), 0) + 1
    return max(pairs, key=pairs.get)


# --- the commands ----------------------------------------------------------------------------


def test_explain_command_stores_scored_rows_and_continues_after_an_interruption(tiny_run, tmp_path):
    db = tmp_path / "explanations.sqlite"
    arguments = ["explain", str(tiny_run), "--layer", "1", "--units", "0-5", "--db", str(db)]
    arguments += ["--tokens", "20000", "--quiet"]
    first = run_in_process(*arguments, "--json")
    assert first.returncode == 0, first.stderr
    rows = [json.loads(line) for line in first.stdout.splitlines()]
    assert [row["unit"] for row in rows] == [f"1.mlp.{i}" for i in range(6)]
    for row in rows:
        assert row["explanation"]
        for score in ("score_top_and_random", "ablation_score", "detection"):
            assert row[score] is None or -1.0 <= row[score] <= 1.0 + 1e-9
    assert any(row["score_top_and_random"] is not None for row in rows)

    # Drop two rows and mark the run unfinished, as if it had been killed: only those two are
    # explained again, in the same run.
    with sqlite3.connect(db) as connection:
        connection.execute("DELETE FROM explanations WHERE unit IN ('1.mlp.4', '1.mlp.5')")
        connection.execute("UPDATE explain_runs SET finished_at = NULL")
    again = run_in_process(*arguments, "--json")
    assert again.returncode == 0, again.stderr
    assert [json.loads(line)["unit"] for line in again.stdout.splitlines()] == [
        "1.mlp.4",
        "1.mlp.5",
    ]
    with sqlite3.connect(db) as connection:
        assert connection.execute(
            "SELECT COUNT(*), COUNT(DISTINCT run_id) FROM explanations"
        ).fetchone() == (6, 1)

    best = run_in_process("explanations", "top", "--db", str(db), "--limit", "3", "--json")
    scores = [json.loads(line)["score_top_and_random"] for line in best.stdout.splitlines()]
    assert scores == sorted(scores, reverse=True) and len(scores) <= 3
    found = run_in_process("explanations", "search", "1.mlp.2", "--db", str(db), "--json")
    assert [json.loads(line)["unit"] for line in found.stdout.splitlines()] == ["1.mlp.2"]


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--layer", "9"], "out of range"),
        (["--layer", "1", "--units", "500"], "channels 0..127"),
        (["--layer", "1", "--units", "0-1000000000000"], "channels 0..127"),
        (["--layer", "1", "--units", "0-" + "9" * 30], "channels 0..127"),
        (["--layer", "1", "--units", "5-1000000000000000000000000,7"], "channels 0..127"),
        (["--layer", "1", "--kind", "resid", "--units", "0-99999999999"], "channels 0..31"),
        (["--layer", "1", "--kind", "gate"], "unknown unit kind"),
        ([], "give one of --layer L, --circuit FILE or --sae DIR"),
    ],
)
def test_explain_refuses_bad_units_in_one_line(tiny_run, tmp_path, extra, fragment):
    result = run_in_process("explain", str(tiny_run), "--db", str(tmp_path / "e.sqlite"), *extra)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr


@pytest.mark.parametrize(
    ("where", "fragment"),
    [("file/sub.sqlite", "is a file, not a folder"), ("folder", "is a folder; give a file path")],
)
def test_explain_refuses_a_database_path_that_cannot_be_a_file(tiny_run, tmp_path, where, fragment):
    (tmp_path / "file").write_text("kept\n")
    (tmp_path / "folder").mkdir()
    db = tmp_path / where
    result = run_in_process("explain", str(tiny_run), "--layer", "0", "--db", str(db))
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and fragment in lines[0], result.stderr
    assert (tmp_path / "file").read_text() == "kept\n"
    assert list((tmp_path / "folder").iterdir()) == []


def test_explain_refuses_a_foreign_database_and_leaves_it_alone(tiny_run, tmp_path):
    foreign = tmp_path / "music.sqlite"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE songs (title TEXT)")
    before = foreign.read_bytes()
    result = run_in_process("explain", str(tiny_run), "--layer", "0", "--db", str(foreign))
    assert result.returncode != 0 and "not a sparsecircuits explanations database" in result.stderr
    assert foreign.read_bytes() == before


# --- puzzles -----------------------------------------------------------------------------------


def test_shipped_puzzles_rank_the_truth_first_offline():
    result = run_in_process("puzzles", "run", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["puzzles"] >= 12
    assert summary["truth_ranked_first"] >= 0.6 * summary["puzzles"]
    assert summary["top_two"] >= summary["truth_ranked_first"]
    for entry in summary["per_puzzle"]:
        assert entry["explainer_explanation"]


def test_the_prose_puzzle_sets_run_by_name_beside_the_baseline():
    result = run_in_process("puzzles", "run", "--set", "dev", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["puzzles"] == 19
    assert summary["truth_ranked_first"] >= 15  # 19 when written; a margin for small changes
    baseline = summary["baseline"]
    assert 0 <= baseline["truth_ranked_first"] <= baseline["top_two"] <= summary["puzzles"]
    assert baseline["truth_ranked_first"] < summary["truth_ranked_first"]
    assert all(1 <= entry["baseline_rank"] <= 5 for entry in summary["per_puzzle"])
    assert set(PUZZLE_SETS) == {"shipped", "dev", "heldout"}
    assert all(path.is_file() for path in PUZZLE_SETS.values())


def test_a_puzzle_whose_truth_is_wrong_is_not_ranked_first(tmp_path):
    """The scorer is not fooled by the position of the candidate: swap truth and a false
    explanation and the (now wrong) 'truth' loses."""
    shipped = json.loads(SHIPPED.read_text())
    swapped = []
    for puzzle in shipped:
        if puzzle["name"] in ("self", "colors", "function names"):
            first_false = puzzle["false_explanations"][0]
            puzzle["false_explanations"][0] = puzzle["explanation"]
            puzzle["explanation"] = first_false
            swapped.append(puzzle)
    path = tmp_path / "swapped.json"
    path.write_text(json.dumps(swapped))
    result = run_in_process("puzzles", "run", str(path), "--json")
    assert json.loads(result.stdout)["truth_ranked_first"] == 0


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("[]", "holds no puzzles"),
        ('[{"name": "x", "explanation": "y", "false_explanations": ["z"]}]', "excerpts"),
        (
            '[{"name": "x", "explanation": "y", "false_explanations": ["z"], "excerpts": '
            '[{"tokens": ["a"], "activations": [1, 2]}, {"tokens": ["b"], "activations": [0]}]}]',
            "1 tokens but 2 activations",
        ),
        ("{not json", "not valid JSON"),
    ],
)
def test_a_bad_puzzle_file_is_one_line(tmp_path, content, fragment):
    path = tmp_path / "puzzles.json"
    path.write_text(content)
    result = run_in_process("puzzles", "run", str(path))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and fragment in lines[0], result.stderr


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [(["--set", "nope"], "'nope' is not one of"), (["--set", "dev", "x.json"], "not both")],
)
def test_a_bad_puzzle_set_is_one_line(arguments, fragment):
    result = run_in_process("puzzles", "run", *arguments)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and fragment in lines[0], result.stderr


# --- baselines ---------------------------------------------------------------------------------


def test_weight_baseline_is_the_first_mlp_read_off_the_weights(run):
    """Token v's prediction = what neuron 3 of layer 0 computes from v's embedding alone
    (attention silenced), checked through the model's own hook points."""
    texts = token_texts(run)
    baseline = WeightBaseline(run)
    description = baseline.explain(Evidence("0.mlp.3", [], [], texts, 1.0))
    tokens = torch.arange(40).unsqueeze(1)  # 40 one-token sequences
    silence = [("blocks.0.hook_attn_out", lambda x, hook: torch.zeros_like(x))]
    with run.model.hooks(silence):
        _, cache = run.model.run_with_cache(tokens, "blocks.0.mlp.hook_pre")
    expected = torch.nn.functional.gelu(cache["blocks.0.mlp.hook_pre"][:, 0, 3])
    predicted = baseline.simulate(description, [[texts[int(t)]] for t in tokens[:, 0]])
    torch.testing.assert_close(torch.tensor([row[0] for row in predicted]), expected)


def test_token_table_predicts_each_token_by_its_mean():
    texts = ["a", "b", "c"]
    excerpts = [Excerpt([0, 1, 0], [2.0, 0.0, 4.0], 0), Excerpt([2, 1], [1.0, 1.0], 64)]
    baseline = TokenTableBaseline()
    description = baseline.explain(Evidence("0.mlp.0", excerpts, [], texts, 4.0))
    assert description.startswith('token table of 0.mlp.0 (3 tokens; strongest "a", "c" or "b"')
    assert baseline.simulate(description, [["a", "b", "z"]]) == [[3.0, 0.5, 0.0]]


@pytest.mark.parametrize("backend", ["token-table", "weights", "next-token"])
def test_baselines_are_scored_like_explanations(tiny_run, tmp_path, backend):
    arguments = ["explain", str(tiny_run), "--layer", "0", "--units", "0-3", "--tokens", "20000"]
    result = run_in_process(
        *arguments, "--quiet", "--json", "--backend", backend, "--db", str(tmp_path / "e.db")
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["explainer"] for row in rows] == [f"baseline:{backend}"] * 4
    assert any(row["score_top_and_random"] is not None for row in rows)


def test_revision_tests_explanations_on_unseen_text_and_stores_the_revision(tiny_run, tmp_path):
    db = tmp_path / "e.sqlite"
    arguments = ["explain", str(tiny_run), "--layer", "1", "--units", "0-3", "--tokens", "20000"]
    result = run_in_process(*arguments, "--quiet", "--json", "--revise", "--db", str(db))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    revised = [row for row in rows if row["explainer"] == "offline+revised"]
    assert len(revised) == 4 and len(rows) == 8
    with sqlite3.connect(db) as connection:
        details = [
            json.loads(text)
            for (text,) in connection.execute(
                "SELECT details FROM explanations WHERE explainer = 'offline+revised'"
            )
        ]
    for detail in details:
        assert detail["revised_from"] and 0 <= detail["probes"] <= 5
        rate = detail["probe_false_positive_rate"]
        assert rate is None or 0 <= rate <= 1
    refused = run_in_process(*arguments, "--revise", "--backend", "token-table", "--db", str(db))
    assert refused.returncode != 0 and "not baselines" in refused.stderr


# --- explainable directions --------------------------------------------------------------------


def test_gradient_ascent_finds_the_direction_a_simulation_describes():
    generator = torch.Generator().manual_seed(0)
    white = torch.randn(50, 16, 8, generator=generator)
    hidden = unit_vector(torch.randn(8, generator=generator))
    simulated = (white @ hidden).clamp(min=0)  # a simulation that follows one direction
    start = unit_vector(torch.randn(8, generator=generator))
    theta, fit = ascend(white, simulated, start, steps=300)
    assert abs(float(theta.norm()) - 1) < 1e-5
    assert float(theta @ hidden) > 0.9 > float(start @ hidden)
    assert fit > 0.8


def test_directions_command_reports_searched_and_random_directions(tiny_run):
    result = run_in_process(
        "explanations", "directions", str(tiny_run), "--layer", "1", "--directions", "1",
        "--rounds", "2", "--excerpts", "128", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert len(found["directions"]) == len(found["random"]) == 1
    direction = found["directions"][0]
    assert direction["explanation"] and len(direction["history"]) == 2
    assert abs(sum(x * x for x in direction["theta"]) - 1) < 1e-4


def test_querying_an_empty_database_says_so(tmp_path):
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    result = run_in_process("explanations", "top", "--db", str(empty))
    assert result.returncode == 0 and result.stdout.strip() == "no explanation matches"
    missing = run_in_process("explanations", "top", "--db", str(tmp_path / "none.sqlite"))
    assert missing.returncode != 0 and "does not exist" in missing.stderr
