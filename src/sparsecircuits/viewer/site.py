"""What the viewer shows: the runs, the circuit files and the explanations database it was
given, each behind a small integer id or a unit name, never behind a path. An SAE given with
`--sae` is spliced into a fresh copy of the run it was trained on and shown as a model of its
own, whose units are the SAE's latents.

Pages ask for things by id; an unknown id is `NotFound` (a 404 page), and nothing a request
says can make the viewer open a file it was not given at start.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from sparsecircuits.circuits.circuit_file import model_hash, read_circuit
from sparsecircuits.errors import UserError
from sparsecircuits.explain.store import ExplanationStore
from sparsecircuits.explain.units import Unit
from sparsecircuits.loading import Run, load_run, resolve_checkpoint
from sparsecircuits.report.run_report import task_results
from sparsecircuits.sae import SparseAutoencoder, load_sae
from sparsecircuits.sae.splice import run_with_sae
from sparsecircuits.tasks import TASKS
from sparsecircuits.train.summary import summarize_run


class NotFound(Exception):
    """A page or item that does not exist: the server answers 404."""


@dataclass
class ViewedRun:
    id: int
    name: str
    path: Path
    run: Run
    lock: threading.Lock = field(default_factory=threading.Lock)  # one forward pass at a time
    sae: SparseAutoencoder | None = None  # spliced into `run`: its latents are the units
    sae_folder: Path | None = None
    computed: dict = field(default_factory=dict)  # slow results, by what was asked

    @cached_property
    def sha256(self) -> str:
        return model_hash(self.run)

    @cached_property
    def summary(self) -> dict:
        return summarize_run(self.run)

    @cached_property
    def tasks(self) -> dict[str, dict]:
        """Loss and accuracy on every task of the suite (32 test pairs each, an overview; computed
        once: `sparsecircuits tasks eval` measures more)."""
        if self.run.tokenizer_or_none is None:
            return {}
        with self.lock:
            return task_results(self.run, tuple(TASKS), n=32)


def node_unit(node_id: str) -> Unit | None:
    """The explainable unit of a circuit node (same name), or None for a kind units do not
    cover: the token embedding's channels, nodes only with `embedding_nodes`."""
    try:
        return Unit.parse(node_id)
    except UserError:
        return None


@dataclass
class ViewedCircuit:
    id: int
    path: Path
    record: dict
    run_id: int | None  # the given run it was pruned from, if any

    @property
    def task(self) -> str:
        return str(self.record.get("task", "?"))

    @property
    def metrics(self) -> dict:
        metrics = self.record.get("metrics")
        return metrics if isinstance(metrics, dict) else {}


class Site:
    def __init__(
        self,
        run_paths: list[Path],
        circuit_paths: list[Path] = (),
        db_path: Path | None = None,
        device: str = "cpu",
        sae_paths: list[Path] = (),
    ) -> None:
        if not run_paths:
            raise UserError("give at least one run or model folder to view")
        self.runs = [
            ViewedRun(i, unique_name(path, run_paths), path, load_run(path, device))
            for i, path in enumerate(run_paths)
        ]
        for folder in sae_paths:
            self.runs.append(self.spliced_run(Path(folder), device))
        files = circuit_files(circuit_paths)
        self.circuits = [
            ViewedCircuit(i, path, record, self.run_of(record))
            for i, (path, record) in enumerate((path, read_circuit(path)) for path in files)
        ]
        if db_path is not None and not Path(db_path).is_file():
            raise UserError(f"no explanations database at {db_path}")
        self.store = ExplanationStore(db_path) if db_path is not None else None
        self.store_lock = threading.Lock()

    def spliced_run(self, folder: Path, device: str) -> ViewedRun:
        """The given run the SAE in `folder` was trained on, loaded again with it spliced in."""
        trained_on = load_sae(folder).config.model_sha256
        base = next((viewed for viewed in self.runs if viewed.sha256 == trained_on), None)
        if base is None:
            raise UserError(f"{folder}: the SAE was trained on none of the models given to view")
        run, splice = run_with_sae(load_run(base.path, device), folder)
        name = f"{base.name} + {folder.name}"
        return ViewedRun(len(self.runs), name, base.path, run, sae=splice.sae, sae_folder=folder)

    def run(self, run_id: int) -> ViewedRun:
        if not 0 <= run_id < len(self.runs):
            raise NotFound(f"no run {run_id}")
        return self.runs[run_id]

    def circuit(self, circuit_id: int) -> ViewedCircuit:
        if not 0 <= circuit_id < len(self.circuits):
            raise NotFound(f"no circuit {circuit_id}")
        return self.circuits[circuit_id]

    def circuits_of(self, run_id: int) -> list[ViewedCircuit]:
        return [circuit for circuit in self.circuits if circuit.run_id == run_id]

    def run_of(self, record: dict) -> int | None:
        """The given run a circuit file was pruned from: same weights, else same folder."""
        model = record.get("model") if isinstance(record.get("model"), dict) else {}
        for viewed in self.runs:
            if model.get("sha256") == viewed.sha256:
                return viewed.id
        for viewed in self.runs:
            recorded = Path(str(model.get("path", "")))
            if recorded.exists() and resolve_checkpoint(recorded) == viewed.run.path:
                return viewed.id
        return None

    def explanations(self, run_id: int) -> list[dict]:
        """The latest explanation of every explained unit of a run, as plain rows."""
        if self.store is None:
            return []
        with self.store_lock:
            rows = self.store.for_model(self.run(run_id).sha256)
        return [dict(row) for row in rows]

    def explanation_of(self, run_id: int, unit: Unit) -> list[dict]:
        return [row for row in self.explanations(run_id) if row["unit"] == unit.name]


def unique_name(path: Path, paths: list[Path]) -> str:
    """A run's folder name, with its parent's when two given runs share a name."""
    same = [other for other in paths if other.name == path.name]
    return path.name if len(same) == 1 else f"{path.parent.name}/{path.name}"


def circuit_files(paths: list[Path]) -> list[Path]:
    """Circuit files given directly, and the *.json circuit files inside given folders."""
    found = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            found.extend(sorted(p for p in path.glob("*.json") if is_circuit_file(p)))
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"no circuit file or folder at {path}")
    return found


def is_circuit_file(path: Path) -> bool:
    try:
        return '"sparsecircuits.circuit/' in path.read_text(encoding="utf-8", errors="ignore")[:400]
    except OSError:
        return False


EXCERPT_SETTINGS = dict(top=5, random=5, quantile_bins=1, per_bin=1, pilot=64, batch_size=32)


@dataclass
class UnitExcerpts:
    """A unit's top and random excerpts, as token texts with activations (for colouring)."""

    top: list[list[tuple[str, float]]]
    random: list[list[tuple[str, float]]]
    max_activation: float


def excerpts_of(viewed: ViewedRun, units: list[Unit], n_tokens: int) -> dict[str, UnitExcerpts]:
    """Top and random excerpts of `units` from one pass over `n_tokens` of the run's corpus."""
    from sparsecircuits.explain.records import RecordSettings, collect_records

    run = viewed.run
    if not units or run.tokenizer_or_none is None:
        return {}
    settings = RecordSettings(n_tokens=n_tokens, excerpt_tokens=32, **EXCERPT_SETTINGS)
    with viewed.lock:
        records = collect_records(run, units, settings, log=lambda _: None)
    text = run.tokenizer.id_to_token_text

    def shown(excerpts: list) -> list[list[tuple[str, float]]]:
        return [
            [(text(t), a) for t, a in zip(e.tokens, e.activations, strict=True)] for e in excerpts
        ]

    def strongest(record) -> list:  # noqa: ANN001
        both = record.top["explain"] + record.top["score"]
        return sorted(both, key=lambda e: e.max, reverse=True)[:5]

    return {
        record.unit.name: UnitExcerpts(
            top=shown(strongest(record)),
            random=shown(record.random["explain"] + record.random["score"])[:5],
            max_activation=record.max_activation(),
        )
        for record in records
    }


@dataclass
class LatentStats:
    """How often each latent of a spliced SAE fires, over the viewer's tokens of the corpus."""

    density: list[float]  # fraction of tokens on which the latent is nonzero
    max_activation: list[float]
    tokens: int


def latent_stats(viewed: ViewedRun, n_tokens: int) -> LatentStats:
    """Density and maximum of every latent, from one pass (kept on the run for later pages)."""
    from sparsecircuits.loading.activations import iter_activations
    from sparsecircuits.sae.splice import latents_hook

    key = ("latent_stats", n_tokens)
    with viewed.lock:
        if key not in viewed.computed:
            hook = latents_hook(viewed.sae)
            width = viewed.sae.config.d_sae
            fired, largest, count = torch.zeros(width), torch.zeros(width), 0
            for batch in iter_activations(viewed.run, hook, n_tokens, 16, split="train"):
                latents = batch.activations[hook].flatten(0, 1).float().cpu()
                fired += (latents != 0).sum(dim=0)
                largest = torch.maximum(largest, latents.max(dim=0).values)
                count += latents.shape[0]
            viewed.computed[key] = LatentStats(
                (fired / max(count, 1)).tolist(), largest.tolist(), count
            )
        return viewed.computed[key]
