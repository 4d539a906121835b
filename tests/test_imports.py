"""`import hf` and `import openai-sparse`: tiny models built here, converted, compared with
their source's own forward pass, then used by the ordinary commands."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers

import sparsecircuits
from cli_runner import run_in_process as run_cli
from sparsecircuits.data import CodeTokenizer
from sparsecircuits.errors import UserError
from sparsecircuits.imports.hf import import_hf
from sparsecircuits.imports.openai_sparse import import_openai_sparse
from sparsecircuits.loading import save_checkpoint
from sparsecircuits.tasks import answer_margins, encode_pairs, margin_loss, task_pairs


def random_gpt2(folder: Path, tokenizer: CodeTokenizer | None, **shape) -> Path:
    """A randomly initialised GPT-2 saved as `transformers` saves it (safetensors)."""
    torch.manual_seed(0)
    options = {"vocab_size": 2048, "n_positions": 64, "n_embd": 48, "n_layer": 2, "n_head": 4}
    config = transformers.GPT2Config(**{**options, **shape}, bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # GPT-2 starts with zero biases and unit norms: make them matter
        for name, param in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save(folder / "tokenizer.json")
    return folder


@pytest.mark.parametrize(
    "shape",
    [{}, {"activation_function": "relu", "tie_word_embeddings": False, "n_inner": 40}],
    ids=["gpt2", "untied-relu"],
)
def test_hf_import_reproduces_the_source_logits(tmp_path: Path, shape: dict) -> None:
    source = random_gpt2(tmp_path / "hf", None, **shape)
    out, record = import_hf(source, tmp_path / "run")
    run = sparsecircuits.load(out)
    reference = transformers.AutoModelForCausalLM.from_pretrained(source).eval()
    tokens = torch.randint(0, 2048, (3, 50), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        difference = (run.model(tokens) - reference(tokens).logits).abs().max()
    assert difference <= 1e-4
    assert record["logits_max_abs_diff"] <= 1e-4
    assert run.model_config.norm == "layer" and run.model_config.learned_positions
    tied = run.model.lm_head.weight is run.model.wte.weight
    assert tied == shape.get("tie_word_embeddings", True)


def test_hf_import_keeps_the_tokenizer_and_runs_the_commands(
    tmp_path: Path, stdlib_tokenizer: CodeTokenizer, corpus_dir: Path
) -> None:
    source = random_gpt2(tmp_path / "hf", stdlib_tokenizer)
    result = run_cli("import", "hf", str(source), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert "tokenizer imported" in result.stdout
    run = sparsecircuits.load(tmp_path / "run")
    text = "def f(x):\n    return 'a' + x\n"
    assert run.tokenizer.decode(run.tokenizer.encode(text)) == text
    assert run.tokenizer.encode(text) == stdlib_tokenizer.encode(text)
    # Teach the imported model the quote task, so pruning has a behaviour to find.
    trained = teach_quote_task(run.model, stdlib_tokenizer)
    taught = tmp_path / "taught"
    config = {**run.config, "train": {**run.config["train"], "data": str(corpus_dir)}}
    save_checkpoint(taught, trained, stdlib_tokenizer, config, {"step": 1})
    task = "single_double_quote"
    result = run_cli("tasks", "eval", str(taught), "--task", task, "--n", "64", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["accuracy"] >= 0.9
    circuit = tmp_path / "quote.json"
    # Without trimming: every node of this model's large circuit would get its try (minutes).
    prune = ["prune", str(taught), "--task", task, "--out", str(circuit), "--steps", "150"]
    prune.append("--no-trim")
    result = run_cli(*prune, "--target-loss", "0.3")
    assert result.returncode == 0, result.stderr
    assert json.loads(circuit.read_text())["metrics"]["nodes"] > 0
    explain = [
        "explain",
        str(taught),
        "--layer",
        "1",
        "--units",
        "0,1",
        "--tokens",
        "4000",
        "--quiet",
    ]
    result = run_cli(*explain, "--db", str(tmp_path / "e.sqlite"))
    assert result.returncode == 0, result.stderr


def teach_quote_task(model: torch.nn.Module, tokenizer: CodeTokenizer) -> torch.nn.Module:
    batch = encode_pairs(task_pairs("single_double_quote", "train", 256, seed=3), tokenizer, 64)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(80):
        rows = torch.arange(step * 32, step * 32 + 32) % batch.batch.n_pairs
        loss = margin_loss(answer_margins(model, batch.batch.subset(rows))).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_an_import_without_tokenizer_runs_on_ids_and_text_commands_say_why(
    tmp_path: Path,
) -> None:
    out, record = import_hf(random_gpt2(tmp_path / "hf", None), tmp_path / "run")
    assert record["tokenizer"].startswith("not imported")
    run = sparsecircuits.load(out)
    assert run.model(torch.zeros(1, 4, dtype=torch.long)).shape == (1, 4, 2048)
    with pytest.raises(UserError, match="no tokenizer"):
        run.tokenizer  # noqa: B018
    result = run_cli("tasks", "eval", str(out), "--task", "var_if", "--n", "8")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no tokenizer" in result.stderr


def test_hf_import_refuses_other_families_and_missing_sources(tmp_path: Path) -> None:
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    for source, message in ((tmp_path / "llama", "GPT-2"), (tmp_path / "none", "cannot read")):
        result = run_cli("import", "hf", str(source), "--out", str(tmp_path / "run"))
        assert result.returncode == 2 and message in result.stderr
        assert result.stderr.count("\n") == 1
    assert not (tmp_path / "run").exists()


# OpenAI's circuit-sparsity format: a state dict with their names, and their forward pass
# written out here independently, operation by operation, as the reference.
OPENAI_CONFIG = {
    "block_size": 32,
    "vocab_size": 300,
    "n_layer": 2,
    "n_head": 3,
    "d_head": 8,  # 3 heads x 8 = 24 wide attention in a 32-wide model
    "d_model": 32,
    "d_mlp": 64,
    "rms_norm": True,
    "afrac": 0.5,
    "afrac_loctypes": "attn_in,attn_q,attn_k,attn_v,attn_out,mlp_in,mlp_neuron,mlp_out",
    "tied_unembed": True,
    "enable_bigram_table": True,
    "sink": True,
    "bias": False,
    "dropout": 0.0,
    "tokenizer_name": "tinypython_2k",
    "bigram_table_rank": None,
}


def openai_state_dict(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape: int, std: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * std

    d, inner, vocab = config["d_model"], config["n_head"] * config["d_head"], config["vocab_size"]
    embedding = normal(vocab, d)
    state = {
        "transformer.wte.weight": embedding,
        "transformer.wpe.weight": normal(config["block_size"], d),
        "transformer.ln_f.weight": 1 + normal(d),
        "lm_head.weight": embedding,
        "final_logits_bias": normal(vocab),
        "bigram_table": normal(vocab, vocab),
    }
    for layer in range(config["n_layer"]):
        prefix = f"transformer.h.{layer}."
        state |= {
            prefix + "ln_1.weight": 1 + normal(d),
            prefix + "ln_2.weight": 1 + normal(d),
            prefix + "attn.c_attn.weight": normal(3 * inner, d),
            prefix + "attn.c_proj.weight": normal(d, inner),
            prefix + "attn.attn_imp.sink_logit": normal(config["n_head"], std=1.0),
            prefix + "mlp.c_fc.weight": normal(config["d_mlp"], d),
            prefix + "mlp.c_proj.weight": normal(d, config["d_mlp"]),
        }
    return state


def reference_logits(state: dict, config: dict, tokens: torch.Tensor) -> torch.Tensor:
    sites = config["afrac_loctypes"].split(",")

    def sparsify(x: torch.Tensor, site: str) -> torch.Tensor:
        if site not in sites:
            return x
        k = int(config["afrac"] * x.shape[-1])
        kept = torch.zeros_like(x)
        index = x.abs().topk(k, dim=-1).indices
        return kept.scatter(-1, index, x.gather(-1, index))

    def rms(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        eps = torch.finfo(torch.float32).eps  # their models run in float32
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight

    n_head, d_head = config["n_head"], config["d_head"]
    batch, n_pos = tokens.shape
    x = state["transformer.wte.weight"][tokens] + state["transformer.wpe.weight"][:n_pos]
    for layer in range(config["n_layer"]):
        p = f"transformer.h.{layer}."
        h = sparsify(rms(x, state[p + "ln_1.weight"]), "attn_in")
        q, k, v = (h @ state[p + "attn.c_attn.weight"].T).split(n_head * d_head, dim=-1)
        q, k, v = sparsify(q, "attn_q"), sparsify(k, "attn_k"), sparsify(v, "attn_v")
        q, k, v = (t.view(batch, n_pos, n_head, d_head).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d_head)
        future = torch.ones(n_pos, n_pos).triu(1).bool()
        scores = scores.masked_fill(future, -math.inf)
        sink = (
            state[p + "attn.attn_imp.sink_logit"].view(1, n_head, 1, 1).expand(batch, -1, n_pos, 1)
        )
        weights = torch.cat([sink, scores], dim=-1).softmax(-1)[..., 1:]
        mixed = (weights @ v).transpose(1, 2).reshape(batch, n_pos, n_head * d_head)
        x = x + sparsify(mixed @ state[p + "attn.c_proj.weight"].T, "attn_out")
        h = sparsify(rms(x, state[p + "ln_2.weight"]), "mlp_in")
        h = sparsify(F.gelu(h @ state[p + "mlp.c_fc.weight"].T), "mlp_neuron")
        x = x + sparsify(h @ state[p + "mlp.c_proj.weight"].T, "mlp_out")
    x = rms(x, state["transformer.ln_f.weight"])
    logits = x @ state["lm_head.weight"].T + state["final_logits_bias"]
    return logits + state["bigram_table"][tokens]


def write_openai_folder(folder: Path, config: dict, state: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "beeg_config.json").write_text(json.dumps(config))
    torch.save(state, folder / "final_model.pt")
    return folder


def test_openai_import_reproduces_their_forward_pass(tmp_path: Path) -> None:
    state = openai_state_dict(OPENAI_CONFIG)
    folder = write_openai_folder(tmp_path / "csp", OPENAI_CONFIG, state)
    result = run_cli("import", "openai-sparse", str(folder), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert "tokenizer not imported" in result.stdout
    run = sparsecircuits.load(tmp_path / "run")
    tokens = torch.randint(0, 300, (4, 32), generator=torch.Generator().manual_seed(2))
    # Compared in float64: AbsTopK at every site turns a float32 rounding difference between
    # two ways of computing the same thing into a different top-k choice on some CPUs.
    with torch.no_grad():
        ours = run.model.double()(tokens)
    wide = {name: tensor.double() for name, tensor in state.items()}
    assert (ours - reference_logits(wide, OPENAI_CONFIG, tokens)).abs().max() <= 1e-9
    assert run.model_config.d_attn == 24 and run.model_config.attention_sink


def test_openai_import_brings_their_tokenizer(
    tmp_path: Path, stdlib_tokenizer: CodeTokenizer
) -> None:
    """Their tokenizer files are GPT-2's format (encoder.json + vocab.bpe) with EOT last."""
    inner = json.loads(stdlib_tokenizer.to_json_str())["model"]
    encoder = {token: i - 1 for token, i in inner["vocab"].items() if i > 0}  # EOT was id 0
    config = {**OPENAI_CONFIG, "vocab_size": 2048, "block_size": 128}
    folder = write_openai_folder(tmp_path / "csp", config, openai_state_dict(config))
    (folder / "encoder.json").write_text(json.dumps(encoder))
    merges = [" ".join(pair) if isinstance(pair, list) else pair for pair in inner["merges"]]
    (folder / "vocab.bpe").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    import_openai_sparse(folder, tmp_path / "run")
    tokenizer = sparsecircuits.load(tmp_path / "run").tokenizer
    task = ["--task", "single_double_quote", "--n", "8", "--json"]
    result = run_cli("tasks", "eval", str(tmp_path / "run"), *task)
    assert result.returncode == 0 and json.loads(result.stdout)[0]["n"] > 0, result.stderr
    assert tokenizer.eot_id == 2047
    text = "class A:\n    def f(self, x1234):\n        return x1234 // 2  # ok\n"
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    # Their split pattern, not GPT-2's: a space before digits stands alone, digits go in
    # threes, so no token crosses these boundaries whatever the merges.
    pieces = [tokenizer.id_to_token_text(i) for i in tokenizer.encode("x = 123456")]
    ends = {sum(len(piece) for piece in pieces[: i + 1]) for i in range(len(pieces))}
    assert {1, 3, 4, 7} <= ends


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"d_pos_emb": 8}, "d_pos_emb"),
        ({"residual_activation_type": "relu"}, "residual"),
        ({"afrac_loctypes": "attn_in,everywhere"}, "everywhere"),
        ({"new_option": 1}, "new_option"),
        ({"d_mlp": 65}, "shape"),
    ],
)
def test_openai_import_refuses_what_it_cannot_reproduce(
    tmp_path: Path, change: dict, message: str
) -> None:
    folder = write_openai_folder(
        tmp_path / "csp", {**OPENAI_CONFIG, **change}, openai_state_dict(OPENAI_CONFIG)
    )
    result = run_cli("import", "openai-sparse", str(folder), "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()


def test_openai_import_never_unpickles_objects(tmp_path: Path) -> None:
    folder = write_openai_folder(tmp_path / "csp", OPENAI_CONFIG, {"weights": Path("/etc")})
    result = run_cli("import", "openai-sparse", str(folder), "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "weights-only" in result.stderr
