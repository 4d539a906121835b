"""From a run and a set of units to stored, scored explanations.

1. Activation records of all the units in one streaming pass (explain.records), cached under
   the token cache by model and settings, so a second command over the same units reuses it.
2. Per unit: the explainer writes from the explain half (top and random excerpts), the
   simulator predicts the score half from the explanation alone, and the scores are computed:
   correlation on 5 top + 5 random excerpts ("top-and-random", the paper's), on the random
   excerpts alone ("random-only"; all that were kept, 20 by default, as units that fire on one
   token in a hundred seldom fire on 5), explained variance, detection, fuzzing and (with the
   model) the ablation score.
3. Each unit's row is stored as soon as it is scored; an interrupted command continues.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from sparsecircuits.circuits.circuit_file import model_hash
from sparsecircuits.data import default_cache_root
from sparsecircuits.explain.ablation import ablation_score
from sparsecircuits.explain.offline import Evidence
from sparsecircuits.explain.records import (
    Excerpt,
    RecordSettings,
    UnitRecords,
    collect_records,
)
from sparsecircuits.explain.scoring import (
    correlation,
    detection_score,
    explained_variance,
    fuzzing_score,
)
from sparsecircuits.explain.store import ExplanationStore
from sparsecircuits.explain.units import Unit
from sparsecircuits.loading import Run


class Explainer(Protocol):
    name: str

    def explain(self, evidence: Evidence) -> str: ...


class Simulator(Protocol):
    name: str

    def simulate(self, explanation: str, excerpts: list[list[str]]) -> list[list[float]]: ...


@dataclass
class ScoreSettings:
    top: int = 5  # top-and-random: 5 top + 5 random excerpts of the score half (the paper's)
    random: int = 5
    ablation: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def token_texts(run: Run) -> list[str]:
    """Every token id's own text (spaces and newlines as they are)."""
    return [run.tokenizer.id_to_token_text(i) for i in range(run.tokenizer.vocab_size)]


def records_folder(model_sha256: str, units: list[Unit], settings: RecordSettings) -> Path:
    what = {"units": [unit.name for unit in units], "settings": settings.to_dict()}
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]
    return default_cache_root() / "records" / f"{model_sha256}-{digest}"


def evidence_for(records: UnitRecords, texts: Sequence[str]) -> Evidence:
    return Evidence(
        records.unit.name,
        records.top["explain"],
        records.random["explain"],
        texts,
        records.max_activation(),
    )


@dataclass
class Simulated:
    """An explanation and its simulation of the score half's excerpts."""

    records: UnitRecords
    explanation: str
    excerpts: list[Excerpt]  # every excerpt any score reads, once each
    simulated: dict[int, list[float]]  # excerpt offset -> simulated activations


def explain_and_simulate(
    records: UnitRecords,
    explainer: Explainer,
    simulator: Simulator,
    texts: Sequence[str],
    settings: ScoreSettings,
) -> Simulated:
    """The language part of one unit (what an LLM backend runs in worker threads)."""
    explanation = explainer.explain(evidence_for(records, texts))
    return simulate_score_half(records, explanation, simulator, texts, settings)


def simulate_score_half(
    records: UnitRecords,
    explanation: str,
    simulator: Simulator,
    texts: Sequence[str],
    settings: ScoreSettings,
) -> Simulated:
    """`explanation`'s simulation of every excerpt of the score half a score reads."""
    excerpts = unique(scored_excerpts(records, settings))
    simulated = simulator.simulate(explanation, [[texts[t] for t in e.tokens] for e in excerpts])
    by_offset = {e.offset: s for e, s in zip(excerpts, simulated, strict=True)}
    return Simulated(records, explanation, excerpts, by_offset)


def scored_excerpts(records: UnitRecords, settings: ScoreSettings) -> list[Excerpt]:
    top = records.top["score"][: settings.top]
    activating = [e for bin_ in records.quantiles["score"] for e in bin_]
    return top + records.random["score"] + activating


def scores_of(run: Run, result: Simulated, settings: ScoreSettings) -> dict:
    """Every score of the explanation on the score half (the ablation score needs the model,
    so this runs in the main thread)."""
    records = result.records
    top = records.top["score"][: settings.top]
    random = records.random["score"]
    activating = top + [e for bin_ in records.quantiles["score"] for e in bin_]

    def pair(chosen: list[Excerpt]) -> tuple[list[list[float]], list[list[float]]]:
        return [e.activations for e in chosen], [result.simulated[e.offset] for e in chosen]

    max_activation = records.max_activation()
    top_and_random = top + random[: settings.random]
    scores = {
        "score_top_and_random": correlation(*pair(top_and_random)),
        "score_random_only": correlation(*pair(random)),
        "explained_variance": explained_variance(*pair(top_and_random)),
        "detection": detection_score(*pair(unique(activating + random)), max_activation),
        "fuzzing": fuzzing_score(*pair(activating), max_activation),
        "ablation_score": None,
    }
    if settings.ablation and top_and_random:
        true, sim = pair(top_and_random)
        tokens = [e.tokens for e in top_and_random]
        scores["ablation_score"] = ablation_score(
            run, records.unit, tokens, true, sim, records.stats["mean"]
        )
    return scores


def explain_units(
    run: Run,
    run_path: str,
    units: list[Unit],
    explainer: Explainer,
    simulator: Simulator,
    store: ExplanationStore,
    record_settings: RecordSettings,
    score_settings: ScoreSettings,
    concurrency: int = 1,
    usage: Callable[[], dict] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Explain and score every unit not yet in this run of the store; the rows stored now.

    With `concurrency` > 1 the explainer and simulator of that many units run at once (an LLM
    backend waits on the network); scoring and storing stay in this thread. `usage` reports
    what the backend spent, stored with the run.
    """
    started = time.perf_counter()
    settings = {"records": record_settings.to_dict(), "scores": score_settings.to_dict()}
    sha = model_hash(run)
    stored = store.start_run(run_path, sha, explainer.name, simulator.name, settings)
    todo = [unit for unit in units if unit.name not in stored.done]
    if len(todo) < len(units):
        log(f"{len(units) - len(todo)} of {len(units)} units already explained in this run")
    rows = []
    if todo:
        folder = records_folder(sha, units, record_settings)
        records = collect_records(run, units, record_settings, folder, progress=progress, log=log)
        by_unit = {unit_records.unit: unit_records for unit_records in records}
        texts = token_texts(run)

        def language(unit: Unit) -> Simulated:
            return explain_and_simulate(by_unit[unit], explainer, simulator, texts, score_settings)

        pool = ThreadPoolExecutor(max_workers=concurrency)
        try:
            results = pool.map(language, todo) if concurrency > 1 else map(language, todo)
            for result in tqdm(results, total=len(todo), unit="unit", disable=not progress):
                row = unit_row(sha, result, explainer.name, scores_of(run, result, score_settings))
                store.add(stored, row)
                rows.append(row)
        finally:
            pool.shutdown(cancel_futures=True)  # a failure or Ctrl-C sends nothing more
    store.finish_run(stored, usage() if usage is not None else None)
    log(f"{len(rows)} units explained and scored in {time.perf_counter() - started:.0f} s")
    return rows


def unit_row(sha: str, result: Simulated, explainer: str, scores: dict) -> dict:
    unit, stats = result.records.unit, result.records.stats
    return {
        "model_sha256": sha,
        "unit": unit.name,
        "layer": unit.layer,
        "kind": unit.kind,
        "unit_index": unit.index,
        "explainer": explainer,
        "explanation": result.explanation,
        **scores,
        "max_activation": stats["max"],
        "fraction_nonzero": stats["fraction_nonzero"],
    }


def unique(excerpts: list[Excerpt]) -> list[Excerpt]:
    """`excerpts` without repeats (a top excerpt may also be a quantile sample), in order."""
    return list({excerpt.offset: excerpt for excerpt in excerpts}.values())
