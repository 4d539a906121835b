"""Export a run as a small, self-describing model folder: packed weights, tokenizer, configs,
training curves and a README with the exact command that reproduces it."""

from __future__ import annotations

import shutil
from pathlib import Path

from sparsecircuits.files import atomic_folder, write_json_atomic, write_text_atomic
from sparsecircuits.loading.checkpoint import CHECKPOINTS, load_run
from sparsecircuits.loading.metrics_file import METRICS, metrics_text, read_metrics_file
from sparsecircuits.loading.weights_file import save_weights
from sparsecircuits.train.flags import train_command
from sparsecircuits.train.summary import summarize_run


def export_run(run: Path, out: Path) -> int:
    """Write `run`'s latest checkpoint into the new folder `out`; returns its size in bytes.

    Weights only (no optimizer state); the folder appears whole or not at all.
    """
    loaded = load_run(run)
    # Metrics and plots lie beside checkpoints/ (or beside the weights of an exported folder).
    run_folder = loaded.path.parent.parent if loaded.path.parent.name == CHECKPOINTS else run
    metrics_path = Path(run_folder) / METRICS
    # Checked before anything is written; a line a killed run left unfinished stays behind.
    metrics = read_metrics_file(metrics_path) if metrics_path.is_file() else None
    with atomic_folder(out) as staging:
        save_weights(loaded.model.state_dict(), staging / "model.safetensors")
        if loaded.tokenizer_or_none is not None:
            loaded.tokenizer_or_none.save(staging / "tokenizer.json")
        write_json_atomic(staging / "config.json", loaded.config)
        write_json_atomic(staging / "trainer_state.json", loaded.state)
        if metrics is not None:
            write_text_atomic(staging / METRICS, metrics_text(metrics.lines))
        plot = Path(run_folder) / "loss.png"
        if plot.is_file():
            shutil.copy(plot, staging / plot.name)
        write_text_atomic(staging / "README.md", model_readme(out.name, summarize_run(loaded)))
    return sum(file.stat().st_size for file in out.iterdir())


def model_readme(name: str, summary: dict) -> str:
    config = summary["config"]
    return "\n".join(
        [
            f"# {name}",
            "",
            f"- validation loss: {summary['val_loss']:.4f} nats/token",
            f"- parameters: {summary['total_params']:,} total, "
            f"{summary['nonzero_params']:,} nonzero (density {summary['density']:.4f})",
            f"- trained: {summary['tokens_trained']:,} tokens ({summary['steps']} steps)",
            "",
            "Reproduce (the full configuration is in config.json):",
            "",
            "```",
            train_command(config, f"runs/{name}"),
            "```",
            "",
        ]
    )
