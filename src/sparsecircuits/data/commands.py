"""`sparsecircuits corpus build|stats`: pinned corpora and what a corpus holds for the tasks."""

from __future__ import annotations

from pathlib import Path

import click

from sparsecircuits.data.corpus import default_cache_root
from sparsecircuits.data.manifest import build_corpus, read_manifest
from sparsecircuits.data.specs import open_corpus
from sparsecircuits.data.stats import corpus_stats
from sparsecircuits.data.tokens import prepare_data
from sparsecircuits.files import json_text

VOCAB_SIZE = click.IntRange(min=257, max=65_536)  # ids are stored as uint16


@click.group()
def corpus() -> None:
    """Build pinned corpora and count what a corpus holds for the tasks."""


@corpus.command("build")
@click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False, exists=True))
def corpus_build(manifest: Path) -> None:
    """Download the wheels a MANIFEST pins (name==version lines, `stdlib` for the standard
    library) into the cache with pip, once, recording their SHA-256; then `train --data
    MANIFEST` reads them without downloading anything."""
    parsed = read_manifest(manifest)
    folder, lock = build_corpus(parsed, default_cache_root(), lambda line: click.echo(line))
    megabytes = sum(archive.bytes for archive in lock.archives) / 1e6
    click.echo(f"{len(lock.archives)} wheels, {megabytes:,.1f} MB, in {folder}")


@corpus.command("stats")
@click.argument("spec", metavar="CORPUS", default="stdlib")
@click.option("--data-glob", default="**/*.py", show_default=True, help="Files of a folder.")
@click.option(
    "--vocab-size",
    type=VOCAB_SIZE,
    default=2048,
    show_default=True,
    help="Tokens are counted with the BPE a training run would use (trained and cached once).",
)
@click.option("--no-tokens", is_flag=True, help="Skip tokenizing (no token counts or rates).")
@click.option("--json", "as_json", is_flag=True, help="The whole result as one JSON object.")
def corpus_stats_command(
    spec: str, data_glob: str, vocab_size: int, no_tokens: bool, as_json: bool
) -> None:
    """Files, tokens, the distinct-file share and how often each task's construction occurs
    in CORPUS (a --data spec: stdlib, installed, a .manifest, a folder, a file)."""
    tokens = None
    if not no_tokens:
        data = prepare_data(spec, vocab_size=vocab_size, glob=data_glob, progress=not as_json)
        tokens = len(data.train) + len(data.val)
    stats = corpus_stats(open_corpus(spec, data_glob), tokens, progress=not as_json)
    click.echo(json_text(stats) if as_json else describe(stats))


def describe(stats: dict) -> str:
    share = stats["distinct_share"]
    lines = [
        stats["corpus"],
        f"files           {stats['files']:,} distinct"
        + (f" ({share:.1%} of {stats['files'] + stats['duplicate_files']:,})" if share else "")
        + (f", {stats['unreadable_files']:,} unreadable" if stats["unreadable_files"] else ""),
        f"bytes           {stats['bytes']:,}",
    ]
    if stats["tokens"]:
        lines.append(
            f"tokens          {stats['tokens']:,}"
            f" ({stats['bytes'] / stats['tokens']:.2f} bytes each)"
        )
    lines += ["", f"{'construction':<48}{'task':<20}{'count':>12}{'per 1M tokens':>15}"]
    for entry in stats["constructions"].values():
        rate = entry["per_million_tokens"]
        lines.append(
            f"{entry['what']:<48}{entry['task']:<20}{entry['count']:>12,}"
            + (f"{rate:>15.1f}" if rate is not None else "")
        )
    return "\n".join(lines)
