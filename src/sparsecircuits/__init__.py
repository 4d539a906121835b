"""sparsecircuits: train weight-sparse transformers on Python code and read their circuits.

Packages, in the order data flows: `data` (corpora, tokenizer, token caches) -> `model` (the
GPT with named hook points) -> `train` (training, checkpoints, `load_run`) -> `report`
(HTML reports). Nothing downstream is imported upstream.
"""

__version__ = "0.1.0"
