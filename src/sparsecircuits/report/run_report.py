"""The HTML report of one training run: loss curve, density per layer, greedy completions,
and, beside a reference model, the same completions and task results side by side.

Rendered by an autoescaping template (`sparsecircuits.render`): every string from the run's
config, the corpus, the model or a circuit file is escaped, every number goes through the
`number` filter, and the only markup embedded as is, the circuit drawing, is the output of the
circuit templates (a plain string passed there instead is shown as text).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import matplotlib
import torch

from sparsecircuits.files import write_text_atomic
from sparsecircuits.loading import Run, load_run
from sparsecircuits.render import render, template_environment
from sparsecircuits.tasks import evaluate_pairs, task_pairs
from sparsecircuits.train.plots import plot_loss_curve
from sparsecircuits.train.summary import summarize_run

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DEFAULT_PROMPTS = (
    "def add(a, b):\n    return",
    "import os\nimport",
    "for i in range(10):\n    print(",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.",
    "if __name__ == '__main__':\n    ",
    "name = 'world'\nprint('hello', name",
    "try:\n    value = int(text)\nexcept ValueError:\n    ",
)

# Tasks the side-by-side table scores: two any small model learns, two that need more.
COMPARED_TASKS = ("while_return_true", "single_double_quote", "if_equals", "bracket_counting")

TEMPLATES = template_environment("sparsecircuits.report")
EXPLANATIONS_SHOWN = 12


def greedy_completions(run: Run, prompts: tuple[str, ...], max_new_tokens: int = 24) -> list[dict]:
    """Each prompt with the model's greedy continuation (decoded text)."""
    completions = []
    for prompt in prompts:
        ids = run.tokenizer.encode(prompt)[-run.model_config.n_ctx :]
        tokens = torch.tensor([ids], device=next(run.model.parameters()).device)
        generated = run.model.generate(tokens, max_new_tokens)[0, len(ids) :].tolist()
        completions.append({"prompt": prompt, "completion": run.tokenizer.decode(generated)})
    return completions


def task_results(run: Run, tasks: tuple[str, ...], n: int = 128) -> dict[str, dict]:
    """Loss and accuracy of `run` on the test pairs of each task, by task name."""
    return {
        task: evaluate_pairs(task, task_pairs(task, "test", n), run.model, run.tokenizer)
        for task in tasks
    }


def side_by_side(run: Run, reference: Run, prompts: tuple[str, ...]) -> dict:
    """What training buys: `run` and `reference` on the same prompts and tasks."""
    ours, theirs = greedy_completions(run, prompts), greedy_completions(reference, prompts)
    return {
        "path": str(reference.path),
        "val_loss": reference.state.get("val_loss"),
        "tokens": reference.state.get("tokens"),
        "completions": [
            {"prompt": a["prompt"], "ours": a["completion"], "theirs": b["completion"]}
            for a, b in zip(ours, theirs, strict=True)
        ],
        "tasks": [
            {"task": task, "ours": mine, "theirs": other}
            for (task, mine), other in zip(
                task_results(run, COMPARED_TASKS).items(),
                task_results(reference, COMPARED_TASKS).values(),
                strict=True,
            )
        ],
    }


def density_per_layer_png(summary: dict) -> bytes:
    layers = summary["density_by_layer"]
    fig, axis = plt.subplots(figsize=(6, 3), dpi=110)
    axis.bar(list(layers), list(layers.values()), color="C0")
    axis.axhline(summary["density"], color="C3", ls="--", label=f"overall {summary['density']:.4f}")
    axis.set_ylabel("nonzero fraction of weights")
    axis.set_yscale("log")
    axis.legend()
    return png_bytes(fig)


def png_bytes(figure: plt.Figure, dpi: int | None = None) -> bytes:
    """A finished matplotlib figure as PNG bytes; the figure is closed."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def write_run_report(
    run_dir: Path,
    out_path: Path,
    prompts: tuple[str, ...] = DEFAULT_PROMPTS,
    circuit: dict | None = None,
    reference: Path | None = None,
    explanations: list[dict] | None = None,
    **extra: object,
) -> Path:
    """Write a self-contained HTML report (images inlined) for the run in `run_dir`.

    `circuit`, if given, is {"record": circuit file dict, "svg": its drawing (from
    `circuits.draw.circuit_svg`), "page": link, "total_nodes": nodes in the model}.
    `reference`, if given, is a trained model shown beside this one (completions, tasks).
    `explanations`, if given, are rows of the explanations database, best first.
    """
    run = load_run(run_dir)
    compared = side_by_side(run, load_run(reference), prompts) if reference else None
    summary = summarize_run(run)
    curve = plot_loss_curve(run_dir / "metrics.jsonl", run_dir / "loss.png").read_bytes()
    html = render(
        TEMPLATES,
        "run_report.html",
        summary=summary,
        model=summary["config"]["model"],
        train=summary["config"]["train"],
        data=summary["config"].get("data", {}),
        loss_curve=data_uri(curve),
        density_plot=data_uri(density_per_layer_png(summary)),
        completions=greedy_completions(run, prompts),
        circuit=circuit,
        compared=compared,
        explanations=(explanations or [])[:EXPLANATIONS_SHOWN],
        explained=len(explanations or []),
        extra=extra,
    )
    return write_text_atomic(out_path, html)
