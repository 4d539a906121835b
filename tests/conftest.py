"""Shared fixtures: a small real Python corpus, a private token cache, a trained tiny run, a
model taught the quote task."""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

import pytest
import torch

from cli_runner import run_cli
from sparsecircuits.data import CodeTokenizer
from sparsecircuits.loading import save_checkpoint
from sparsecircuits.model import GPT, GPTConfig
from sparsecircuits.tasks import answer_margins, encode_pairs, margin_loss, task_pairs
from sparsecircuits.train import project_to_density

TASK = "single_double_quote"

# No test may depend on the float luck of one seed or one CPU: `SPARSECIRCUITS_TEST_SEED=N make
# test` trains the shared fixtures with other seeds and seeds torch's global generator before
# every test with N (tests that build hand-set weights seed their own generators).
TEST_SEED = int(os.environ.get("SPARSECIRCUITS_TEST_SEED", "0"))

STDLIB = Path(sysconfig.get_paths()["stdlib"])


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test (and every CLI subprocess) uses a throwaway token cache."""
    root = tmp_path_factory.mktemp("cache")
    os.environ["SPARSECIRCUITS_CACHE"] = str(root)
    return root


@pytest.fixture(autouse=True)
def seeded_torch() -> None:
    torch.manual_seed(TEST_SEED)


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few hundred KB of real standard-library Python, copied so tests control it."""
    root = tmp_path_factory.mktemp("corpus")
    for package in ("json", "email", "logging"):
        shutil.copytree(
            STDLIB / package, root / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> Path:
    """A tiny sparse model trained once for the tests that only read a run."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    tasks = "single_double_quote,var_if"  # scored at each eval, as a user may ask
    arguments = ["--preset", "tiny", "--data", str(corpus_dir), "--eval-tasks", tasks]
    arguments += ["--seed", str(TEST_SEED)]
    result = run_cli("train", *arguments, "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def stdlib_tokenizer() -> CodeTokenizer:
    """A 2048-token BPE trained on ~3 MB of the real standard library (about 2 s)."""
    texts, size = [], 0
    for path in sorted(STDLIB.glob("*.py")):
        texts.append(path.read_text(encoding="utf-8", errors="replace"))
        size += len(texts[-1])
        if size > 3_000_000:
            break
    return CodeTokenizer.train(texts, vocab_size=2048)


@pytest.fixture(scope="session")
def quote_run(
    tmp_path_factory: pytest.TempPathFactory, stdlib_tokenizer: CodeTokenizer, corpus_dir: Path
) -> Path:
    """A 2-layer weight-sparse model trained on quote pairs until it closes strings well."""
    torch.manual_seed(TEST_SEED)
    model = GPT(GPTConfig(vocab_size=2048, n_layer=2, d_model=32, n_ctx=128))
    pairs = task_pairs(TASK, "train", 256, seed=7 + TEST_SEED)
    batch = encode_pairs(pairs, stdlib_tokenizer, 128).batch
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(120):
        rows = torch.arange(step * 32, step * 32 + 32) % batch.n_pairs
        loss = margin_loss(answer_margins(model, batch.subset(rows))).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        project_to_density(model, 0.25)
    run_dir = tmp_path_factory.mktemp("quote") / "run"
    config = {"model": model.config.to_dict(), "train": {"data": str(corpus_dir)}, "data": {}}
    save_checkpoint(run_dir, model.eval(), stdlib_tokenizer, config, {"step": 120, "val_loss": 6.5})
    return run_dir
