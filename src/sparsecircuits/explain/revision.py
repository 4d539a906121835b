"""Revision (spec section 6): test each explanation on new text that it says should activate
the unit, and revise it with what that text really does.

"Text the explanation says should activate the unit" is found rather than written:
one more streaming pass over excerpts the activation records never used (further along the
same shuffled order, so never a scored excerpt) keeps, per unit, the excerpts its explanation
predicts fire most, with the unit's true activations. Half of them go to the explainer beside
its old evidence and old explanation (`revise`: the offline explainer sees false positives as
counterexamples in its cross-validation, an LLM reads them in its prompt); the
other half score the old and the revised explanation, so a revision is judged on probes it did
not see. The revised explanation is then scored on the score half like any other and stored
as explainer "<name>+revised", with the probe figures in its `details`.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable

from sparsecircuits.circuits.circuit_file import model_hash
from sparsecircuits.explain.pipeline import (
    Explainer,
    ScoreSettings,
    Simulator,
    evidence_for,
    records_folder,
    scores_of,
    simulate_score_half,
    token_texts,
    unit_row,
)
from sparsecircuits.explain.records import Excerpt, RecordSettings, collect_records, excerpt
from sparsecircuits.explain.scoring import ACTIVE_FRACTION, correlation
from sparsecircuits.explain.store import ExplanationStore
from sparsecircuits.explain.units import Unit, unit_activations
from sparsecircuits.loading import Run
from sparsecircuits.loading.activations import iter_activations

PROBES = 10  # per unit: 5 to revise with, 5 to judge the revision on


def probe_excerpts(
    run: Run,
    units: list[Unit],
    explanations: dict[Unit, str],
    simulator: Simulator,
    settings: RecordSettings,
    windows: int = 1024,
) -> dict[Unit, list[Excerpt]]:
    """Per unit, the PROBES unseen excerpts its explanation predicts fire most."""
    texts = token_texts(run)
    start = settings.n_tokens // settings.excerpt_tokens  # the record pass ended here
    stream = iter_activations(
        run,
        sorted({unit.hook for unit in units}),
        windows * settings.excerpt_tokens,
        settings.batch_size,
        split=settings.split,
        order="shuffled",
        seed=settings.seed,
        window=settings.excerpt_tokens,
        start=start,
    )
    best: dict[Unit, list[tuple[float, int, Excerpt]]] = {unit: [] for unit in units}
    eot = run.tokenizer.eot_id
    for batch in stream:
        keep = ~(batch.tokens[:, :-1] == eot).any(dim=1)
        acts = unit_activations(batch.activations, units)[keep]  # [b, length, units]
        tokens, offsets = batch.tokens[keep], batch.offsets[keep]
        strings = [[texts[t] for t in row.tolist()] for row in tokens]
        for u, unit in enumerate(units):
            predicted = simulator.simulate(explanations[unit], strings)
            for row, values in enumerate(predicted):
                peak = max(values) if values else 0.0
                if peak <= 0:
                    continue
                found = excerpt(tokens[row], acts[row, :, u], offsets[row])
                item = (peak, -int(offsets[row]), found)
                if len(best[unit]) < PROBES:
                    heapq.heappush(best[unit], item)
                else:
                    heapq.heappushpop(best[unit], item)
    return {unit: [item[2] for item in sorted(items, reverse=True)] for unit, items in best.items()}


def revise_units(
    run: Run,
    run_path: str,
    units: list[Unit],
    explainer: Explainer,
    simulator: Simulator,
    store: ExplanationStore,
    record_settings: RecordSettings,
    score_settings: ScoreSettings,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Revise the stored explanations of `units` (by `explainer`) and store the revisions."""
    sha = model_hash(run)
    latest = {
        row["unit"]: row["explanation"]
        for row in store.for_model(sha)
        if row["explainer"] == explainer.name
    }
    units = [unit for unit in units if unit.name in latest]
    explanations = {unit: latest[unit.name] for unit in units}
    folder = records_folder(sha, units, record_settings)
    records = {r.unit: r for r in collect_records(run, units, record_settings, folder, log=log)}
    probes = probe_excerpts(run, units, explanations, simulator, record_settings)
    texts = token_texts(run)
    name = f"{explainer.name}+revised"
    settings = {"records": record_settings.to_dict(), "scores": score_settings.to_dict()}
    stored = store.start_run(run_path, sha, name, simulator.name, settings)
    rows = []
    for unit in units:
        if unit.name in stored.done:
            continue
        found = probes[unit]
        shown, judged = found[0::2], found[1::2]
        revised = explainer.revise(evidence_for(records[unit], texts), explanations[unit], shown)
        result = simulate_score_half(records[unit], revised, simulator, texts, score_settings)
        details = probe_figures(
            explanations[unit], revised, judged, records[unit].max_activation(), simulator, texts
        )
        row = unit_row(sha, result, name, scores_of(run, result, score_settings))
        row["details"] = json.dumps(details)
        store.add(stored, row)
        rows.append(row)
    store.finish_run(stored)
    return rows


def probe_figures(
    before: str,
    after: str,
    judged: list[Excerpt],
    max_activation: float,
    simulator: Simulator,
    texts: list[str],
) -> dict:
    """How often the old explanation's predicted firing was false, and how well the old and
    revised explanations predict the probes they were not revised on."""
    threshold = ACTIVE_FRACTION * max_activation
    false_positives = sum(excerpt.max < threshold for excerpt in judged)
    strings = [[texts[t] for t in e.tokens] for e in judged]
    truth = [e.activations for e in judged]
    return {
        "revised_from": before,
        "probes": len(judged),
        "probe_false_positive_rate": false_positives / len(judged) if judged else None,
        "probe_score_before": correlation(truth, simulator.simulate(before, strings)),
        "probe_score_after": correlation(truth, simulator.simulate(after, strings)),
    }
