"""A byte-level BPE tokenizer for Python source, wrapping the `tokenizers` library.

Byte-level means every string, whatever its characters, encodes to tokens and decodes back to
exactly itself: tabs, newlines, runs of indentation and non-ASCII text included. The one special
token is EOT (id 0), which separates documents in the token stream.
"""

import hashlib
from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from sparsecircuits.errors import UserError, first_line
from sparsecircuits.files import write_text_atomic

EOT = "<|endoftext|>"

# Token caches store ids as uint16.
MAX_VOCAB_SIZE = 65535
# 256 byte tokens plus EOT: the smallest vocabulary that can still spell every string.
MIN_VOCAB_SIZE = 257


def _byte_to_char() -> dict[int, str]:
    """The byte-level alphabet: each byte is shown as one printable character.

    Bytes that are already printable and not whitespace stand for themselves; the rest are moved
    up to code points 256 and above, in byte order (so a space becomes "Ġ", a newline "Ċ").
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    mapping = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shifted)
            shifted += 1
    return mapping


_CHAR_TO_BYTE = {char: byte for byte, char in _byte_to_char().items()}


class CodeTokenizer:
    """Byte-level BPE with EOT as its only special token."""

    def __init__(self, inner: tokenizers.Tokenizer):
        eot_id = inner.token_to_id(EOT)
        if eot_id is None:
            raise UserError(
                f"tokenizer has no {EOT} token, so it is not a sparsecircuits tokenizer"
            )
        if inner.get_vocab_size() > MAX_VOCAB_SIZE:
            raise UserError(
                f"tokenizer vocabulary has {inner.get_vocab_size():,} tokens; "
                f"at most {MAX_VOCAB_SIZE:,} fit the uint16 token caches"
            )
        # A literal "<|endoftext|>" inside a document is just text; the only EOT ids in a token
        # stream are the document separators that tokens.py puts there itself.
        inner.encode_special_tokens = True
        self._inner = inner
        self._eot_id = eot_id

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 2048) -> "CodeTokenizer":
        """Learn BPE merges from `texts`. The result may be smaller than `vocab_size` when the
        texts are too small to supply that many merges."""
        if not MIN_VOCAB_SIZE <= vocab_size <= MAX_VOCAB_SIZE:
            raise UserError(
                f"vocab_size must be between {MIN_VOCAB_SIZE} and {MAX_VOCAB_SIZE:,} "
                f"(uint16 token caches), got {vocab_size:,}"
            )
        inner = tokenizers.Tokenizer(models.BPE())
        # GPT-2's split pattern keeps runs of whitespace together as one piece, so indentation
        # can become a single learned token; no prefix space, or round trips would gain one.
        inner.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        inner.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        inner.train_from_iterator(texts, trainer=trainer)
        return cls(inner)

    @classmethod
    def from_file(cls, path: str | Path) -> "CodeTokenizer":
        path = Path(path)
        if not path.is_file():
            raise UserError(f"tokenizer file not found: {path}")
        try:
            inner = tokenizers.Tokenizer.from_file(str(path))
        except Exception as error:  # the library raises a bare Exception for bad JSON
            raise UserError(f"cannot read tokenizer {path}: {first_line(error)}") from error
        try:
            return cls(inner)
        except UserError as error:  # a tokenizer file, but not one of ours
            raise UserError(f"{path}: {error}") from None

    def save(self, path: str | Path) -> None:
        """Write the tokenizer JSON atomically, so a killed run never leaves half a file."""
        write_text_atomic(Path(path), self.to_json_str())

    @property
    def vocab_size(self) -> int:
        return self._inner.get_vocab_size()

    @property
    def eot_id(self) -> int:
        return self._eot_id

    def encode(self, text: str) -> list[int]:
        return self._inner.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Encode many texts at once, in parallel inside the library."""
        return [encoding.ids for encoding in self._inner.encode_batch_fast(texts)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._inner.decode(list(ids), skip_special_tokens=False)

    def id_to_token_text(self, i: int) -> str:
        """The token's own text for display: real spaces and newlines rather than "Ġ" and "Ċ".

        A token that holds only part of a multi-byte character shows the loose bytes as
        escapes such as "\\xe2", rather than as a replacement character.
        """
        token = self._inner.id_to_token(i)
        if token is None:
            raise UserError(f"token id {i} is outside the vocabulary (size {self.vocab_size:,})")
        if i == self._eot_id:
            return EOT
        raw = bytes(_CHAR_TO_BYTE[char] for char in token)
        return raw.decode("utf-8", errors="backslashreplace")

    def to_json_str(self) -> str:
        return self._inner.to_str()

    @cached_property
    def sha(self) -> str:
        """A short hash of the whole tokenizer (vocabulary, merges, settings), for cache keys."""
        return hashlib.sha256(self.to_json_str().encode("utf-8")).hexdigest()[:16]
