"""A circuit size as a spread: one prune per seed (mask init and pair draws), reused from the
prune store or from the JSON of an earlier measurement, and which tasks a model does at all.

`frontier` and `benchmarks/circuit_size.py` both measure this way, so a prune either of them
recorded (keyed by the weights' hash, the pairs, the whole prune config and the recipe
version) serves the other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from sparsecircuits.circuits.circuit_file import model_hash
from sparsecircuits.circuits.config import PruneConfig
from sparsecircuits.circuits.spread import median_range
from sparsecircuits.circuits.store import PruneStore, prune_key, stored_prune_metrics
from sparsecircuits.circuits.task_data import task_splits
from sparsecircuits.errors import UserError
from sparsecircuits.loading import Run
from sparsecircuits.tasks import encode_pairs, evaluate_task, task_pairs
from sparsecircuits.validation import load_json

VALIDATION_PAIRS = 256
KEPT_FIELDS = ("edges", "nodes", "circuit_loss", "accepted", "effort")


def validation_loss(run: Run, task: str) -> float:
    """The full model's task loss on validation pairs: which tasks a model does is decided on
    pairs that neither pruning nor the reported numbers use."""
    pairs = task_pairs(task, "validation", VALIDATION_PAIRS)
    batch = encode_pairs(pairs, run.tokenizer, run.model_config.n_ctx).batch
    return evaluate_task(run.model, batch)["loss"]


def recorded_prunes(paths: list[Path | None]) -> dict[str, dict]:
    """Every prune that earlier measurements wrote to these JSON files, by key: each object
    inside them with a "key", a "seed" and its "edges" or "error" (missing files skipped)."""
    recorded = {}
    for path in paths:
        if path is not None and Path(path).is_file():
            measured = load_json(path, object, "measurement file")
            for prune in _recorded_prunes(measured):
                recorded[prune["key"]] = prune
    return recorded


def _recorded_prunes(value: object) -> Iterator[dict]:
    if isinstance(value, dict):
        if "key" in value and "seed" in value and ("edges" in value or "error" in value):
            yield value
            return
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            yield from _recorded_prunes(item)


def prune_seeds(
    run: Run,
    path: Path,
    task: str,
    config: PruneConfig,
    seeds: int,
    store: PruneStore,
    recorded: dict[str, dict],
    fresh: bool = False,
    log: Callable[[str], None] = print,
    after_each: Callable[[list[dict]], None] | None = None,
) -> dict:
    """One prune per seed 0..seeds-1 (config's seed replaced): each one's edges, nodes, test
    loss, verdict and effort (or its error), and the median and range of the edges."""
    prunes = []
    weights = model_hash(run)
    for seed in range(seeds):
        splits = task_splits(run, task, None, seed)
        seeded = replace(config, seed=seed)
        key = prune_key(weights, splits, seeded)
        if key in recorded and not fresh:
            log(f"  {task} ({path}, seed {seed}): recorded earlier")
            prunes.append(recorded[key])
            continue
        try:
            metrics = stored_prune_metrics(run, path, splits, seeded, store, fresh, log)
        except UserError as error:
            prunes.append({"seed": seed, "key": key, "error": str(error)})
        else:
            kept = {name: metrics.get(name) for name in KEPT_FIELDS}
            prunes.append({"seed": seed, "key": key} | kept)
        if after_each is not None:
            after_each(prunes)
    edges = [prune["edges"] for prune in prunes if "error" not in prune]
    return {"prunes": prunes, "edges": median_range(edges) if edges else None}
