"""The TransformerLens side of cache_throughput.py, run in its own venv (benchmarks/.venv-tl,
made by benchmarks/envs/setup_transformer_lens.sh); it never imports sparsecircuits.

    benchmarks/.venv-tl/bin/python benchmarks/tl_worker.py HF_DIR TOKENS OUT

Loads the GPT-2 saved in HF_DIR into a HookedTransformer offline with no weight processing
(raw logits stay those of the HF model), times a plain forward, `run_with_cache` of every hook
and a one-layer filtered cache that stops after that layer on the token ids in TOKENS
(safetensors, "tokens"), and writes OUT (safetensors): the forward's "logits", and the timings
as JSON in the metadata under "results".
"""

from __future__ import annotations

import argparse
import json
import warnings
from importlib.metadata import version
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights
from transformers import GPT2LMHeadModel
from transformers.utils import logging as transformers_logging

from timing import median_seconds  # benchmarks/timing.py, beside this script


def load_hooked_gpt2(hf_dir: Path) -> HookedTransformer:
    """The HF GPT-2 in `hf_dir` as a HookedTransformer computing exactly the same logits."""
    hf_model = GPT2LMHeadModel.from_pretrained(hf_dir)
    hf = hf_model.config
    cfg = HookedTransformerConfig(
        n_layers=hf.n_layer,
        d_model=hf.n_embd,
        n_ctx=hf.n_positions,
        d_head=hf.n_embd // hf.n_head,
        n_heads=hf.n_head,
        d_mlp=hf.n_inner or 4 * hf.n_embd,
        d_vocab=hf.vocab_size,
        act_fn=hf.activation_function,
        eps=hf.layer_norm_epsilon,
        normalization_type="LN",
        positional_embedding_type="standard",
        original_architecture="GPT2LMHeadModel",
        device="cpu",
    )
    # HookedTransformer is deprecated in 3.x (4.0 removed it); it is the API compared here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(cfg)
    # Every processing step off: folding and centring change the logits we compare.
    model.load_and_process_state_dict(
        convert_gpt2_weights(hf_model, cfg),
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hf_dir", type=Path)
    parser.add_argument("tokens", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--layer", type=int, default=5, help="the filtered cache's layer")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    transformers_logging.disable_progress_bar()

    torch.set_num_threads(args.threads)
    model = load_hooked_gpt2(args.hf_dir)
    tokens = load_file(args.tokens)["tokens"]
    one_hook, stop = f"blocks.{args.layer}.hook_resid_post", args.layer + 1
    with torch.no_grad():
        logits = model(tokens)
        cache_logits, cache = model.run_with_cache(tokens)
        _, one = model.run_with_cache(tokens, names_filter=one_hook, stop_at_layer=stop)
        results = {
            "version": version("transformer_lens"),
            "every_entries": len(cache),
            "every_bytes": sum(value.nbytes for value in cache.values()),
            "one_entries": sorted(one.keys()),
            "cache_vs_forward_max_abs_diff": (cache_logits - logits).abs().max().item(),
        }
        del cache, cache_logits

        def every_with_heads() -> None:
            # TransformerLens computes per-head outputs (hook_result) only when asked to.
            model.set_use_attn_result(True)
            model.run_with_cache(tokens)
            model.set_use_attn_result(False)

        steps = {
            "forward": lambda: model(tokens),
            "every": lambda: model.run_with_cache(tokens),
            "every_heads": every_with_heads,
            "one": lambda: model.run_with_cache(tokens, names_filter=one_hook, stop_at_layer=stop),
        }
        results["seconds"] = median_seconds(steps, args.warmup, args.repeats)
    save_file({"logits": logits.contiguous()}, args.out, metadata={"results": json.dumps(results)})


if __name__ == "__main__":
    main()
