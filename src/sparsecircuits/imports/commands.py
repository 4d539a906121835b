"""`sparsecircuits import hf` and `import openai-sparse`: outside models as run folders."""

from __future__ import annotations

from pathlib import Path

import click

from sparsecircuits.cli_types import OutputPath


@click.group("import")
def import_() -> None:
    """Convert a model trained elsewhere into a run folder every command opens."""


@import_.command("hf")
@click.argument("source")
@click.option("--out", required=True, type=OutputPath(), help="New run folder.")
def hf(source: str, out: Path) -> None:
    """A Hugging Face GPT-2-family model: a local folder or a hub name (needs network).

    The converted model's logits are compared with the source's on random tokens before
    anything is written; its tokenizer comes along when the source has one.
    """
    from sparsecircuits.imports.hf import import_hf

    _, record = import_hf(source, out)
    report(out, record)


@import_.command("openai-sparse")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=OutputPath(), help="New run folder.")
@click.option(
    "--tokenizer",
    "tokenizer_folder",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder with their encoder.json + vocab.bpe (default: FOLDER itself).",
)
def openai_sparse(folder: Path, out: Path, tokenizer_folder: Path | None) -> None:
    """A model of OpenAI's circuit-sparsity release: beeg_config.json + final_model.pt."""
    from sparsecircuits.imports.openai_sparse import import_openai_sparse

    _, record = import_openai_sparse(folder, out, tokenizer_folder)
    report(out, record)


def report(out: Path, record: dict) -> None:
    click.echo(f"wrote {out}")
    if "logits_max_abs_diff" in record:
        click.echo(f"logits match the source within {record['logits_max_abs_diff']:.2e}")
    click.echo(f"tokenizer {record['tokenizer']}")
