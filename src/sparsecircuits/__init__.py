"""sparsecircuits: train weight-sparse transformers on Python code and read their circuits.

Packages, in the order data flows: `data` (corpora, tokenizer, token caches) -> `model` (the
GPT with named hook points) -> `loading` (saved runs, `load`, the activation stream) -> `tasks`
(the task suite) -> `train` (training) -> `circuits` (pruning) -> `report` (HTML reports).
Nothing downstream is imported upstream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from sparsecircuits.loading import Run

__version__ = "0.1.0"


def load(path: str | Path, device: str = "cpu") -> Run:
    """Any saved run folder or checkpoint as a `Run` (`.model`, `.tokenizer`, `.config`).

    Imported on first use, so `import sparsecircuits` (and the CLI's --help) stays fast.
    """
    from sparsecircuits.loading import load_run

    return load_run(path, device)
