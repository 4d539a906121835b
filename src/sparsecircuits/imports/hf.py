"""Hugging Face GPT-2-family models (`transformers` GPT2LMHeadModel) as run folders.

GPT-2 differs from the models trained here only in options the one GPT class has: LayerNorm
with a bias, learned positions, tied embeddings and the tanh approximation of GELU. Its
Conv1D weights are stored [in, out] with q, k and v fused, so they are transposed and split.
The tokenizer comes along when the source has one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

from sparsecircuits.data import CodeTokenizer
from sparsecircuits.data.tokenizer import MIN_VOCAB_SIZE
from sparsecircuits.errors import UserError, first_line
from sparsecircuits.imports.run_folder import (
    build_model,
    check_parity,
    probe_tokens,
    reading_source,
    write_imported_run,
)
from sparsecircuits.model import GPTConfig

# transformers' activation names -> the GPT config's
ACTIVATIONS = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu": "gelu",
    "relu": "relu",
}

TOKENIZER_FILES = ("tokenizer.json", "vocab.json")
CONFIG_FILES = ("config.json",)
# The weights transformers looks for in a folder, in its order.
WEIGHTS_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def import_hf(source: str | Path, out: Path) -> tuple[Path, dict]:
    """Convert the GPT-2-family model at `source` (a folder or a hub name) into the run
    folder `out`; returns the folder and its "source" record (parity, tokenizer)."""
    hf_model = load_hf_model(str(source))
    config = gpt_config(hf_model.config, str(source))
    model = build_model(config, converted_weights(hf_model, config), str(source))
    tokens = probe_tokens(config.vocab_size, config.n_ctx)
    with torch.no_grad():
        difference = float((hf_model(tokens).logits - model(tokens)).abs().max())
    check_parity(difference, str(source))
    tokenizer, tokenizer_note = load_tokenizer(str(source))
    record = {
        "format": "hf",
        "from": str(source),
        "model_type": hf_model.config.model_type,
        "logits_max_abs_diff": difference,
        "tokenizer": tokenizer_note,
    }
    write_imported_run(out, model, tokenizer, record, f"imported from {source}")
    return out, record


def load_hf_model(source: str):  # noqa: ANN201 (transformers is imported lazily)
    try:
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError:
        raise UserError("importing Hugging Face models needs `transformers` installed") from None
    with reading_source(source_file(source, CONFIG_FILES), "a Hugging Face model config"):
        hf_config = AutoConfig.from_pretrained(source)
    if hf_config.model_type != "gpt2":
        raise UserError(
            f"{source} is a {hf_config.model_type!r} model; `import hf` converts the GPT-2 "
            "family (model_type gpt2: gpt2, distilgpt2, gpt2-medium...)"
        )
    check_supported(hf_config, source)
    weights = source_file(source, WEIGHTS_FILES)
    with reading_source(weights, "Hugging Face GPT-2 weights"), quiet_transformers():
        model, loading = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch.float32, output_loading_info=True
        )
    # transformers fills tensors a file lacks with random values and only warns.
    missing = sorted(loading["missing_keys"])
    if missing:
        raise UserError(
            f"{weights} lacks {len(missing)} of the model's tensors ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}); nothing was written"
        )
    return model.eval()


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No progress bar or load report from transformers: what matters in them (a tensor the
    file lacks) becomes this command's own one-line error."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def source_file(source: str, names: tuple[str, ...]) -> str:
    """The file of a local source folder that transformers reads (the first of `names` it
    has), to name in errors; a hub name stays as it is."""
    folder = Path(source)
    found = [folder / name for name in names if (folder / name).is_file()]
    return str(found[0]) if folder.is_dir() and found else source


def check_supported(hf_config, source: str) -> None:  # noqa: ANN001
    """Refuse GPT-2 options whose forward pass the one GPT class does not reproduce."""
    if hf_config.activation_function not in ACTIVATIONS:
        raise UserError(
            f"{source}: activation {hf_config.activation_function!r} is not supported "
            f"(supported: {', '.join(ACTIVATIONS)})"
        )
    unsupported = {
        "scale_attn_weights": False,
        "scale_attn_by_inverse_layer_idx": True,
        "add_cross_attention": True,
    }
    for option, bad in unsupported.items():
        if getattr(hf_config, option, not bad) == bad:
            raise UserError(f"{source}: {option}={bad} is not supported")


def gpt_config(hf_config, source: str) -> GPTConfig:  # noqa: ANN001
    if hf_config.n_embd % hf_config.n_head:
        raise UserError(f"{source}: n_embd {hf_config.n_embd} is not a multiple of n_head")
    return GPTConfig(
        vocab_size=hf_config.vocab_size,
        n_layer=hf_config.n_layer,
        d_model=hf_config.n_embd,
        n_ctx=hf_config.n_positions,
        d_head=hf_config.n_embd // hf_config.n_head,
        d_mlp=hf_config.n_inner or 4 * hf_config.n_embd,
        learned_positions=True,
        norm="layer",
        norm_eps=hf_config.layer_norm_epsilon,
        activation=ACTIVATIONS[hf_config.activation_function],
        tied_embeddings=bool(getattr(hf_config, "tie_word_embeddings", True)),
    )


def converted_weights(hf_model, config: GPTConfig) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """The source's tensors under this project's names and layouts ([out, in] weights)."""
    source = {
        name.removeprefix("transformer."): tensor.detach()
        for name, tensor in hf_model.state_dict().items()
    }
    d = config.d_model
    weights = {"wte.weight": source["wte.weight"], "wpe.weight": source["wpe.weight"]}
    for layer in range(config.n_layer):
        theirs, ours = f"h.{layer}.", f"blocks.{layer}."
        for their_norm, our_norm in (("ln_1", "norm_attn"), ("ln_2", "norm_mlp")):
            for part in ("weight", "bias"):
                weights[f"{ours}{our_norm}.{part}"] = source[f"{theirs}{their_norm}.{part}"]
        fused_weight = source[f"{theirs}attn.c_attn.weight"].T  # Conv1D: [in, 3 d] -> [3 d, in]
        fused_bias = source[f"{theirs}attn.c_attn.bias"]
        for index, projection in enumerate(("q_proj", "k_proj", "v_proj")):
            rows = slice(index * d, (index + 1) * d)
            weights[f"{ours}attn.{projection}.weight"] = fused_weight[rows]
            weights[f"{ours}attn.{projection}.bias"] = fused_bias[rows]
        for their_linear, our_linear in (
            ("attn.c_proj", "attn.out_proj"),
            ("mlp.c_fc", "mlp.fc"),
            ("mlp.c_proj", "mlp.proj"),
        ):
            weights[f"{ours}{our_linear}.weight"] = source[f"{theirs}{their_linear}.weight"].T
            weights[f"{ours}{our_linear}.bias"] = source[f"{theirs}{their_linear}.bias"]
    weights["norm_final.weight"] = source["ln_f.weight"]
    weights["norm_final.bias"] = source["ln_f.bias"]
    if not config.tied_embeddings:
        weights["lm_head.weight"] = source["lm_head.weight"]
    weights["lm_head.bias"] = torch.zeros(config.vocab_size)  # GPT-2's unembedding has none
    return {name: tensor.contiguous() for name, tensor in weights.items()}


def load_tokenizer(source: str) -> tuple[CodeTokenizer | None, str]:
    """The source's fast tokenizer as ours, and a note for the record (why none, if none)."""
    from transformers import AutoTokenizer

    folder = Path(source)
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        return None, f"not imported: {source} has none of {', '.join(TOKENIZER_FILES)}"
    try:
        hf_tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, TypeError) as error:
        return None, f"not imported: {first_line(error)}"
    inner = getattr(hf_tokenizer, "backend_tokenizer", None)
    if inner is None:
        return None, "not imported: the source has no fast (tokenizers) tokenizer"
    if inner.get_vocab_size() < MIN_VOCAB_SIZE:  # transformers makes an empty one on its own
        return None, f"not imported: the source's tokenizer has {inner.get_vocab_size()} tokens"
    import tokenizers

    try:
        return CodeTokenizer(tokenizers.Tokenizer.from_str(inner.to_str())), "imported"
    except UserError as error:
        return None, f"not imported: {error}"
