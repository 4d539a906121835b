"""Explanation throughput: offline units explained and scored per minute on this machine, and
what the `openai` backend spends per unit against the local test server (tests/fake_llm.py),
including a rerun that must send nothing (the request cache).

    .venv/bin/python benchmarks/explain_throughput.py models/reference-sparse-topk
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import sparsecircuits
from sparsecircuits.explain.llm import LLMClient, LLMExplainer, LLMSimulator
from sparsecircuits.explain.offline import OfflineExplainer, OfflineSimulator
from sparsecircuits.explain.pipeline import ScoreSettings, explain_units
from sparsecircuits.explain.records import RecordSettings, collect_records
from sparsecircuits.explain.store import ExplanationStore
from sparsecircuits.explain.units import layer_units

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from fake_llm import MODEL, FakeLLM  # noqa: E402  (the test server, reused)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, nargs="?", default=Path("models/reference-sparse-topk"))
    parser.add_argument("--layer", type=int, default=1)
    parser.add_argument("--units", type=int, default=64, help="units (every k-th of the layer)")
    parser.add_argument("--tokens", type=int, default=200_000)
    parser.add_argument("--llm-units", type=int, default=8)
    args = parser.parse_args()

    run = sparsecircuits.load(args.model)
    width = run.model_config.d_mlp
    units = layer_units(run.model_config, args.layer, "mlp", range(0, width, width // args.units))
    settings = RecordSettings(n_tokens=args.tokens)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        collect_records(run, units, settings, log=lambda line: None)
        records_seconds = time.perf_counter() - started
        store = ExplanationStore(Path(folder) / "bench.sqlite")
        started = time.perf_counter()
        explain_units(
            run, str(args.model), units, OfflineExplainer(), OfflineSimulator(), store,
            settings, ScoreSettings(), progress=False, log=lambda line: None,
        )  # fmt: skip
        total = time.perf_counter() - started
    print(f"{args.model.name}, layer {args.layer}, {len(units)} MLP units, {args.tokens:,} tokens")
    speed = args.tokens / records_seconds
    print(f"  activation records: {records_seconds:.1f} s ({speed:,.0f} tokens/s)")
    print(
        f"  offline explain + simulate + score (records included, embedding model load "
        f"included): {total:.1f} s = {len(units) / total * 60:.0f} units/min"
    )
    llm_units = units[: args.llm_units]
    with tempfile.TemporaryDirectory() as folder, FakeLLM() as server:
        store = ExplanationStore(Path(folder) / "llm.sqlite")
        spent = []
        for attempt in range(2):
            client = LLMClient(server.base_url, MODEL, store, concurrency=4)
            if attempt:  # a second, interrupted-and-resumed run: every unit again, from cache
                store.connection.execute("DELETE FROM explanations")
                store.connection.execute("UPDATE explain_runs SET finished_at = NULL")
                store.connection.commit()
            explain_units(
                run, str(args.model), llm_units, LLMExplainer(client), LLMSimulator(client),
                store, settings, ScoreSettings(), concurrency=4, progress=False,
                log=lambda line: None,
            )  # fmt: skip
            spent.append(client.usage)
    first, second = spent
    n = len(llm_units)
    print(f"openai backend against the local test server, {n} units:")
    print(
        f"  requests per unit {first.requests_sent / n:.1f}, prompt tokens per unit "
        f"{first.prompt_tokens / n:,.0f}, completion tokens per unit "
        f"{first.completion_tokens / n:,.0f}"
    )
    print(
        f"  rerun after an interruption: {second.requests_sent} requests sent, "
        f"{second.cache_hits} answered from the cache"
    )


if __name__ == "__main__":
    main()
