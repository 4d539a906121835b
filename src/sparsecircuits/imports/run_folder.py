"""The run folder an import writes, and the checks every import shares.

An imported run is a checkpoint folder like any other: config.json (with a "source" section
saying where the weights came from and how closely the conversion reproduced them),
model.safetensors and, when the source had one, tokenizer.json. It is written atomically, so
a failed import leaves nothing behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

from sparsecircuits.data import CodeTokenizer
from sparsecircuits.errors import UserError, first_line
from sparsecircuits.files import atomic_folder, write_json_atomic
from sparsecircuits.loading import TrainConfig
from sparsecircuits.loading.weights_file import save_weights
from sparsecircuits.model import GPT, GPTConfig

# The conversion is refused when the imported model's logits differ from the source's by more.
PARITY_TOLERANCE = 1e-4


@contextlib.contextmanager
def reading_source(path: Path | str, what: str) -> Iterator[None]:
    """Turn any error of another library while it reads `path` into one line naming it.

    torch, safetensors and transformers raise a dozen types for a damaged file (truncated,
    zero bytes, garbage, nested too deeply): a failed read of a source is always bad input.
    """
    try:
        yield
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 (see above)
        reason = first_line(error)
        if not any(character.isalpha() for character in reason):  # pickle's bare "1584996200"
            reason = f"{type(error).__name__} {reason}"
        raise UserError(f"cannot read {path} as {what}: {reason}") from None


def build_model(config: GPTConfig, weights: dict[str, torch.Tensor], source: str) -> GPT:
    """Our GPT with exactly `weights`: a missing or extra tensor, or a wrong shape, is an error
    naming it rather than a silently random or ignored weight."""
    model = GPT(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        problem = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        raise UserError(f"cannot convert {source}: weights {problem}")
    for name, tensor in weights.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise UserError(
                f"cannot convert {source}: {name} has shape {tuple(tensor.shape)}, "
                f"the config implies {tuple(expected[name].shape)}"
            )
    model.load_state_dict({name: tensor.float() for name, tensor in weights.items()})
    return model.eval()


def probe_tokens(vocab_size: int, n_ctx: int, seed: int = 0) -> torch.Tensor:
    """A fixed batch of random token ids for comparing a converted model with its source."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (2, min(n_ctx, 64)), generator=generator)


def check_parity(difference: float, source: str) -> None:
    if not difference <= PARITY_TOLERANCE:  # also catches NaN
        raise UserError(
            f"the converted {source} does not reproduce its source: logits differ by up to "
            f"{difference:.2e} (tolerance {PARITY_TOLERANCE:g}); nothing was written"
        )


def write_imported_run(
    out: Path, model: GPT, tokenizer: CodeTokenizer | None, source: dict, description: str
) -> Path:
    """Write the run folder `out` (which must not exist or be empty) and return it."""
    if tokenizer is not None and tokenizer.vocab_size > model.config.vocab_size:
        raise UserError(
            f"the tokenizer has {tokenizer.vocab_size:,} tokens but the model only "
            f"{model.config.vocab_size:,} embeddings"
        )
    # Activation streams read the stdlib corpus through the imported tokenizer: Python code,
    # the text these models are about here.
    train = TrainConfig(preset="imported", density=1.0, vocab_size=model.config.vocab_size)
    config = {
        "model": model.config.to_dict(),
        "train": train.to_dict(),
        "data": {"description": description},
        "source": source,
    }
    with atomic_folder(out) as staging:
        save_weights(model.state_dict(), staging / "model.safetensors")
        write_json_atomic(staging / "config.json", config)
        write_json_atomic(staging / "trainer_state.json", {"step": 0, "tokens": 0})
        if tokenizer is not None:
            tokenizer.save(staging / "tokenizer.json")
    return out
