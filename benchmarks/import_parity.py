"""Import parity: how closely converted models reproduce their source's logits.

A GPT-2-small-shaped Hugging Face model and a weight-sparse model in OpenAI's circuit-sparsity
format (beeg_config.json + final_model.pt, random weights with 1/16 nonzero, AbsTopK at their
default sites plus q/k/v, attention sink, bigram table), each converted by `sparsecircuits
import` and compared on random tokens with the source: transformers' own forward, and for the
OpenAI format the reference forward pass of tests/test_imports.py.

    .venv/bin/python benchmarks/import_parity.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

import sparsecircuits
from sparsecircuits.imports.hf import import_hf
from sparsecircuits.imports.openai_sparse import import_openai_sparse

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from test_imports import openai_state_dict, reference_logits, write_openai_folder  # noqa: E402

OPENAI_SHAPE = {
    "block_size": 256,
    "vocab_size": 2048,
    "n_layer": 8,
    "n_head": 16,
    "d_head": 16,
    "d_model": 256,
    "d_mlp": 1024,
    "rms_norm": True,
    "afrac": 0.25,
    "afrac_loctypes": "attn_in,attn_q,attn_k,attn_v,attn_out,mlp_in,mlp_out",
    "tied_unembed": True,
    "enable_bigram_table": True,
    "sink": True,
    "bias": False,
}


def gpt2_parity(folder: Path) -> float:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
    source = GPT2LMHeadModel(config).eval()
    source.save_pretrained(folder / "gpt2")
    import_hf(folder / "gpt2", folder / "gpt2-run")
    model = sparsecircuits.load(folder / "gpt2-run").model
    tokens = torch.randint(0, 50257, (2, 512), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return float((model(tokens) - source(tokens).logits).abs().max())


def openai_parity(folder: Path) -> float:
    state = openai_state_dict(OPENAI_SHAPE)
    generator = torch.Generator().manual_seed(5)
    for name, tensor in state.items():  # weight-sparse, as their models are
        if tensor.dim() == 2 and "wpe" not in name and "bigram" not in name:
            tensor.mul_(torch.rand(tensor.shape, generator=generator) < 1 / 16)
    write_openai_folder(folder / "csp", OPENAI_SHAPE, state)
    import_openai_sparse(folder / "csp", folder / "csp-run")
    model = sparsecircuits.load(folder / "csp-run").model
    tokens = torch.randint(0, 2048, (4, 256), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = model(tokens)
        return float((ours - reference_logits(state, OPENAI_SHAPE, tokens)).abs().max())


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        gpt2, openai = gpt2_parity(folder), openai_parity(folder)
    print(f"GPT-2 small shape (transformers), 2 x 512 tokens: max |logit diff| {gpt2:.2e}")
    print(f"circuit-sparsity format, 8 layers, d_model 256: max |logit diff| {openai:.2e}")


if __name__ == "__main__":
    main()
