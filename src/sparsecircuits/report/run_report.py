"""The HTML report of one training run: what it can do first (the task suite, sampled
completions), then its loss curve and density per layer; beside a reference model, both
side by side.

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
from sparsecircuits.tasks import PAPER_TASKS, TASKS, evaluate_pairs, task_pairs
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

# Completions are sampled, as a language model's text usually is: greedy decoding of a small
# model loops (`import os` seven times), which says little about what it learned.
SAMPLING = {"temperature": 0.8, "top_k": 40, "seed": 0}
TARGET_LOSS = 0.15  # a task counts as done below this loss (per sequence)
TASK_PAIRS = 64  # test pairs per task in the report's table

TEMPLATES = template_environment("sparsecircuits.report")
EXPLANATIONS_SHOWN = 12


def completions(run: Run, prompts: tuple[str, ...], max_new_tokens: int = 32) -> list[dict]:
    """Each prompt with one continuation sampled as SAMPLING says (decoded text); the same
    model, prompts and seed give the same text."""
    device = next(run.model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(SAMPLING["seed"])
    results = []
    for prompt in prompts:
        ids = run.tokenizer.encode(prompt)[-run.model_config.n_ctx :]
        tokens = torch.tensor([ids], device=device)
        generated = run.model.generate(
            tokens,
            max_new_tokens,
            temperature=SAMPLING["temperature"],
            top_k=SAMPLING["top_k"],
            generator=generator,
        )
        text = run.tokenizer.decode(generated[0, len(ids) :].tolist())
        results.append({"prompt": prompt, "completion": text})
    return results


def task_results(run: Run, tasks: tuple[str, ...], n: int = TASK_PAIRS) -> dict[str, dict]:
    """Loss and accuracy of `run` on `n` test pairs of each task, by task name, and whether
    it does the task ("done": loss at most TARGET_LOSS)."""
    results = {}
    for task in tasks:
        result = evaluate_pairs(task, task_pairs(task, "test", n), run.model, run.tokenizer)
        results[task] = result | {"done": result["n"] > 0 and result["loss"] <= TARGET_LOSS}
    return results


def task_table(runs: list[Run], n: int = TASK_PAIRS) -> dict:
    """Every task of the suite on each run's test pairs, and how many of the paper's twenty
    each run does below TARGET_LOSS."""
    by_run = [task_results(run, tuple(TASKS), n) for run in runs]
    rows = [
        {"task": name, "description": task.description, "results": [r[name] for r in by_run]}
        for name, task in TASKS.items()
    ]
    done = [
        sum(row["results"][i]["done"] for row in rows if row["task"] in PAPER_TASKS)
        for i in range(len(runs))
    ]
    return {"rows": rows, "done": done, "of": len(PAPER_TASKS), "pairs": n, "target": TARGET_LOSS}


def side_by_side(run: Run, reference: Run, prompts: tuple[str, ...]) -> dict:
    """What training buys: `run` and `reference` on the same prompts."""
    ours, theirs = completions(run, prompts), completions(reference, prompts)
    return {
        "path": str(reference.path),
        "val_loss": reference.state.get("val_loss"),
        "tokens": reference.state.get("tokens"),
        "completions": [
            {"prompt": a["prompt"], "ours": a["completion"], "theirs": b["completion"]}
            for a, b in zip(ours, theirs, strict=True)
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
    other = load_run(reference) if reference else None
    compared = side_by_side(run, other, prompts) if other else None
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
        completions=completions(run, prompts),
        sampling=SAMPLING,
        tasks=task_table([run, other] if other else [run]),
        circuit=circuit,
        compared=compared,
        explanations=(explanations or [])[:EXPLANATIONS_SHOWN],
        explained=len(explanations or []),
        extra=extra,
    )
    return write_text_atomic(out_path, html)
