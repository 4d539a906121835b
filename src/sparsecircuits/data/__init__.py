"""Data: corpora, the BPE tokenizer, on-disk token caches and training/validation batches.

Owns everything between "a corpus spec" and "tensors of token ids": reading documents
(corpus.py; Python packages, installed or pinned by a manifest, in packages.py and manifest.py;
specs.py picks a corpus from a `--data` spec), byte-level BPE (tokenizer.py), cached uint16
token streams with batch sampling (tokens.py), and what a corpus holds for the tasks
(stats.py). It is the first stage of the pipeline, so it imports nothing from other
sparsecircuits packages except the leaf modules `errors`, `files` and `validation`.
"""

from sparsecircuits.data.corpus import Corpus, Document, default_cache_root, is_validation
from sparsecircuits.data.specs import open_corpus
from sparsecircuits.data.tokenizer import EOT, CodeTokenizer
from sparsecircuits.data.tokens import (
    TokenizedCorpus,
    prepare_data,
    sample_batch,
    sample_offsets,
    validation_batches,
    windows_at,
)

__all__ = [
    "EOT",
    "CodeTokenizer",
    "Corpus",
    "Document",
    "TokenizedCorpus",
    "default_cache_root",
    "is_validation",
    "open_corpus",
    "prepare_data",
    "sample_batch",
    "sample_offsets",
    "validation_batches",
    "windows_at",
]
