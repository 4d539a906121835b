"""OpenAI's circuit-sparsity models (the `openai/circuit_sparsity` release) as run folders.

A release folder holds `beeg_config.json` (the model's options) and `final_model.pt` (a
nanoGPT-style state dict: `transformer.h.N.attn.c_attn` with q, k and v fused row-wise,
`c_proj`, `mlp.c_fc`, `ln_1`/`ln_2`, `transformer.ln_f`, `lm_head`, optional
`final_logits_bias`, `bigram_table` and per-head attention sink logits). The state dict is
read with `torch.load(weights_only=True)` only. Their tokenizer (GPT-2-style `encoder.json` +
`vocab.bpe` with its own split pattern and `<|endoftext|>` last) comes along where present.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sparsecircuits.data import CodeTokenizer
from sparsecircuits.data.tokenizer import EOT
from sparsecircuits.errors import UserError
from sparsecircuits.imports.run_folder import build_model, reading_source, write_imported_run
from sparsecircuits.model import GPTConfig
from sparsecircuits.validation import load_json

CONFIG_FILE, WEIGHTS_FILE = "beeg_config.json", "final_model.pt"
# Their AbsTopK location names -> ours.
SITES = {
    "attn_in": "attn_in",
    "attn_q": "q",
    "attn_k": "k",
    "attn_v": "v",
    "attn_out": "attn_out",
    "mlp_in": "mlp_in",
    "mlp_neuron": "mlp_neuron",
    "mlp_out": "mlp_out",
    "resid_post_attn": "resid_mid",
    "resid_post_mlp": "resid_post",
}
DEFAULT_SITES = "attn_in,attn_out,mlp_in,mlp_out"
# Keys of their config that only concern training or kernels, not the forward pass.
IGNORED_KEYS = {
    "dropout",
    "flash",
    "grad_checkpointing",
    "debug_nans",
    "tokenizer_name",
    "enable_sparse_kernels",
    "learnable_bigram_table",
    "bigram_table_rank",
    "bias",
    "ln_bias",
    "dropout_cat_pos_emb",
    "sinusoidal_cat_pos_emb",
}
FORWARD_KEYS = {
    "block_size",
    "vocab_size",
    "n_layer",
    "n_head",
    "d_head",
    "d_model",
    "d_mlp",
    "n_mlp",
    "rms_norm",
    "residual_activation_type",
    "activation_type",
    "afrac",
    "afrac_loctypes",
    "tied_unembed",
    "enable_bigram_table",
    "d_pos_emb",
    "sink",
    "use_tied_aux_matrix",
}
# Their RMSNorm is torch's with its default epsilon: the float32 machine epsilon.
RMS_EPS = float(torch.finfo(torch.float32).eps)
LAYER_NORM_EPS = 1e-5
# Their GPT's defaults, for keys a config leaves out.
DEFAULTS = {
    "block_size": 1024,
    "vocab_size": 50304,
    "n_layer": 12,
    "n_head": 12,
    "d_model": 768,
    "rms_norm": False,
    "activation_type": "gelu",
    "tied_unembed": True,
}


def import_openai_sparse(
    folder: Path, out: Path, tokenizer_folder: Path | None = None
) -> tuple[Path, dict]:
    """Convert the release folder `folder` into the run folder `out`; returns the folder and
    its "source" record."""
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise UserError(f"{folder} has no {CONFIG_FILE}: not a circuit-sparsity model folder")
    config = gpt_config(load_json(folder / CONFIG_FILE, dict, CONFIG_FILE), folder)
    state = read_state_dict(folder / WEIGHTS_FILE)
    model = build_model(config, converted_weights(state, config), str(folder / WEIGHTS_FILE))
    tokenizer, tokenizer_note = find_tokenizer(tokenizer_folder or folder, config.vocab_size)
    record = {"format": "openai-sparse", "from": str(folder), "tokenizer": tokenizer_note}
    write_imported_run(out, model, tokenizer, record, f"imported from {folder}")
    return out, record


def gpt_config(theirs: dict, folder: Path) -> GPTConfig:
    unknown = sorted(set(theirs) - IGNORED_KEYS - FORWARD_KEYS)
    if unknown:
        raise UserError(
            f"{folder / CONFIG_FILE}: unknown key(s) {', '.join(unknown)}; this importer knows "
            "the circuit-sparsity release format and would rather stop than guess"
        )
    options = {**DEFAULTS, **theirs}
    if options.get("d_pos_emb") is not None:
        raise UserError(f"{folder}: concatenated position embeddings (d_pos_emb) are not supported")
    if options.get("residual_activation_type", "identity") != "identity":
        raise UserError(f"{folder}: a residual-stream activation is not supported")
    if options.get("use_tied_aux_matrix"):
        raise UserError(f"{folder}: use_tied_aux_matrix is not supported")
    if options["activation_type"] not in ("gelu", "relu"):
        raise UserError(f"{folder}: unknown activation_type {options['activation_type']!r}")
    sites = [site.strip() for site in options.get("afrac_loctypes", DEFAULT_SITES).split(",")]
    unknown_sites = [site for site in sites if site and site not in SITES]
    if unknown_sites:
        raise UserError(f"{folder}: unknown AbsTopK location {unknown_sites[0]!r}")
    d_model, n_head = options["d_model"], options["n_head"]
    return GPTConfig(
        vocab_size=options["vocab_size"],
        n_layer=options["n_layer"],
        d_model=d_model,
        n_ctx=options["block_size"],
        d_head=options.get("d_head") or d_model // n_head,
        n_head=n_head,
        d_mlp=options.get("d_mlp") or options.get("n_mlp") or 4 * d_model,
        learned_positions=True,
        bigram_table=bool(options.get("enable_bigram_table")),
        attention_sink=bool(options.get("sink")),
        afrac=options.get("afrac"),
        afrac_sites=[SITES[site] for site in sites if site],
        norm="rms" if options["rms_norm"] else "layer",
        norm_eps=RMS_EPS if options["rms_norm"] else LAYER_NORM_EPS,
        activation=options["activation_type"],
        tied_embeddings=bool(options["tied_unembed"]),
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of `final_model.pt`, loaded without unpickling anything but tensors."""
    if not path.is_file():
        raise UserError(f"no {path.name} in {path.parent}")
    with reading_source(path, "a weights-only state dict"):
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(
        isinstance(value, torch.Tensor) for value in state.values()
    ):
        raise UserError(f"{path} is not a state dict (name -> tensor)")
    # torch.compile prefixes every name; sparse-kernel runs may store sparse tensors.
    return {
        name.removeprefix("_orig_mod."): tensor.to_dense() if tensor.is_sparse else tensor
        for name, tensor in state.items()
    }


def converted_weights(state: dict[str, torch.Tensor], config: GPTConfig) -> dict:
    """Their tensors under this project's names; biases they do not have become zeros."""
    source = dict(state)

    def take(name: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        if name in source:
            return source.pop(name)
        if shape is None:
            raise UserError(f"{WEIGHTS_FILE} has no {name}")
        return torch.zeros(shape)

    d, inner = config.d_model, config.d_attn
    weights = {
        "wte.weight": take("transformer.wte.weight"),
        "wpe.weight": take("transformer.wpe.weight")[: config.n_ctx],
    }
    norm_parts = ("weight", "bias") if config.norm == "layer" else ("weight",)
    for layer in range(config.n_layer):
        theirs, ours = f"transformer.h.{layer}.", f"blocks.{layer}."
        for their_norm, our_norm in (("ln_1", "norm_attn"), ("ln_2", "norm_mlp")):
            for part in norm_parts:
                weights[f"{ours}{our_norm}.{part}"] = take(f"{theirs}{their_norm}.{part}", (d,))
        fused_weight = take(f"{theirs}attn.c_attn.weight")
        fused_bias = take(f"{theirs}attn.c_attn.bias", (3 * inner,))
        for index, projection in enumerate(("q_proj", "k_proj", "v_proj")):
            rows = slice(index * inner, (index + 1) * inner)
            weights[f"{ours}attn.{projection}.weight"] = fused_weight[rows]
            weights[f"{ours}attn.{projection}.bias"] = fused_bias[rows]
        for their_linear, our_linear, width in (
            ("attn.c_proj", "attn.out_proj", d),
            ("mlp.c_fc", "mlp.fc", config.d_mlp),
            ("mlp.c_proj", "mlp.proj", d),
        ):
            weights[f"{ours}{our_linear}.weight"] = take(f"{theirs}{their_linear}.weight")
            weights[f"{ours}{our_linear}.bias"] = take(f"{theirs}{their_linear}.bias", (width,))
        source.pop(f"{theirs}attn.bias", None)  # the causal-mask buffer of their slow path
        if config.attention_sink:
            weights[f"{ours}attn.sink_logit"] = take(f"{theirs}attn.attn_imp.sink_logit")
    for part in norm_parts:
        weights[f"norm_final.{part}"] = take(f"transformer.ln_f.{part}", (d,))
    if config.tied_embeddings:
        source.pop("lm_head.weight", None)  # the embedding itself, saved a second time
    else:
        weights["lm_head.weight"] = take("lm_head.weight")
    weights["lm_head.bias"] = take("final_logits_bias", (config.vocab_size,))
    if config.bigram_table:
        weights["bigram.weight"] = take("bigram_table")
    if source:
        raise UserError(
            f"{WEIGHTS_FILE} has tensors this config does not use: {sorted(source)[:3]}"
        )
    return {name: tensor.contiguous() for name, tensor in weights.items()}


def find_tokenizer(folder: Path, vocab_size: int) -> tuple[CodeTokenizer | None, str]:
    """Their BPE (encoder.json + vocab.bpe) or a tokenizer.json in `folder`, if there is one."""
    if (folder / "tokenizer.json").is_file():
        return CodeTokenizer.from_file(folder / "tokenizer.json"), "imported (tokenizer.json)"
    if (folder / "encoder.json").is_file() and (folder / "vocab.bpe").is_file():
        return tinypython_tokenizer(folder, vocab_size), "imported (encoder.json, vocab.bpe)"
    return None, f"not imported: {folder} has no encoder.json + vocab.bpe or tokenizer.json"


# Their tokenizer's split pattern: letters with one leading non-letter, numbers of up to three
# digits, punctuation runs with trailing newlines or slashes, and whitespace runs.
TINYPYTHON_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def tinypython_tokenizer(folder: Path, vocab_size: int) -> CodeTokenizer:
    """A byte-level BPE from GPT-2-style files, with their split pattern and EOT as the last id."""
    import tokenizers
    from tokenizers import Regex, decoders, models, pre_tokenizers

    vocab = load_json(folder / "encoder.json", dict, "encoder.json")
    try:
        lines = (folder / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read {folder / 'vocab.bpe'}: {error}") from None
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    if any(len(pair) != 2 for pair in merges):
        raise UserError(f"{folder / 'vocab.bpe'}: every merge line must hold two tokens")
    inner = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges))
    inner.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(TINYPYTHON_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    inner.decoder = decoders.ByteLevel()
    if EOT not in vocab:
        inner.add_special_tokens([EOT])
    if inner.get_vocab_size() > vocab_size:
        raise UserError(
            f"{folder}: the tokenizer has {inner.get_vocab_size():,} tokens, the model "
            f"{vocab_size:,} embeddings"
        )
    return CodeTokenizer(inner)
