"""SAE latents against weight sparsity: how explainable are a dense and a sparse model's MLP
neurons, and the latents of an SAE on each, by the same explainer and scorer, in one run?

Per model (`--model ROLE=PATH`, the pair under test, e.g. sparse and dense twins that differ
in weight sparsity only):

1. SAEs (TopK, `--width` latents) on `--hook`, one per k of `--k-grid`, trained on the model's
   training split and evaluated on its validation split. Each model uses the smallest k whose
   explained variance reaches `--target-ev`, so both models' latents reconstruct about equally
   well ("matched reconstruction quality"; the chosen k and its explained variance and loss
   recovered are printed). SAE folders are kept under `--work` and reused by a later run.
2. `--units` units drawn at random (seeded) from the MLP neurons of the hook's layer and from
   the chosen SAE's latents, explained and scored by the offline backend (or by an
   OpenAI-compatible server with --base-url and --llm-model) on the same activation records
   settings; rows go to the SQLite `--db`.
3. Per set of units: the mean top-and-random and random-only correlation scores and the mean
   ablation score, with 90% bootstrap intervals over units and the number of units a score is
   undefined for (never active on the scored excerpts); then differences of means between sets,
   each with its bootstrap interval.

    .venv/bin/python benchmarks/sae_vs_sparse.py --model sparse=models/reference-sparse-topk \
        --model dense=models/reference-dense-topk-matched --hook blocks.2.hook_resid_post \
        --json docs/experiments/sae-vs-sparse.json
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import sparsecircuits
from sparsecircuits.circuits.spread import quantile
from sparsecircuits.explain.offline import OfflineExplainer, OfflineSimulator
from sparsecircuits.explain.pipeline import ScoreSettings, explain_units
from sparsecircuits.explain.records import RecordSettings
from sparsecircuits.explain.store import ExplanationStore
from sparsecircuits.explain.units import latent_units, layer_units
from sparsecircuits.files import write_json_atomic
from sparsecircuits.sae import SAEConfig, load_sae
from sparsecircuits.sae.evaluation import evaluate_sae
from sparsecircuits.sae.splice import run_with_sae
from sparsecircuits.sae.training import SAETrainConfig, train_sae

SCORES = ("score_top_and_random", "score_random_only", "ablation_score")
DRAWS = 2000
LEVEL = 0.9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="ROLE=PATH, repeated")
    parser.add_argument("--hook", default="blocks.2.hook_resid_post")
    parser.add_argument("--width", type=int, default=1024, help="SAE latents")
    parser.add_argument("--k-grid", default="8,16,32", help="TopK k values tried per model")
    parser.add_argument("--target-ev", type=float, default=0.85)
    parser.add_argument("--sae-tokens", type=int, default=1_000_000)
    parser.add_argument("--eval-tokens", type=int, default=65_536)
    parser.add_argument("--units", type=int, default=64, help="units drawn per set")
    parser.add_argument("--tokens", type=int, default=200_000, help="tokens of records")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("runs/sae-vs-sparse"))
    parser.add_argument("--db", type=Path, default=Path("runs/sae-vs-sparse/explanations.sqlite"))
    parser.add_argument("--base-url", help="an OpenAI-compatible server (default: offline)")
    parser.add_argument("--llm-model", help="the model name on that server")
    parser.add_argument("--json", type=Path, help="also write the whole result here")
    args = parser.parse_args()
    models = dict(parse_role(text) for text in args.model)
    explainer, simulator = backend(args)
    store = ExplanationStore(args.db)
    started = time.perf_counter()
    result: dict = {"settings": settings_of(args), "saes": {}, "sets": {}}
    for role, path in models.items():
        run = sparsecircuits.load(path)
        chosen = choose_sae(run, role, args)
        result["saes"][role] = chosen
        layer = int(args.hook.split(".")[1])
        width = run.model_config.d_mlp
        neurons = layer_units(run.model_config, layer, "mlp", draw(width, args.units, args.seed))
        rows = explain(run, str(path), neurons, explainer, simulator, store, args)
        result["sets"][f"{role} neurons"] = summarise(rows)
        spliced, splice = run_with_sae(run, Path(chosen["folder"]))
        indices = draw(args.width, args.units, args.seed)
        latents = latent_units(spliced.model_config, args.hook, args.width, indices)
        label = f"{path} + {chosen['folder']}"
        rows = explain(spliced, label, latents, explainer, simulator, store, args)
        result["sets"][f"{role} SAE latents"] = summarise(rows)
        splice.remove()
    result["differences"] = differences(result["sets"], list(models))
    result["seconds"] = time.perf_counter() - started
    print_result(result)
    if args.json:
        write_json_atomic(args.json, result)


def parse_role(text: str) -> tuple[str, Path]:
    role, equals, path = text.partition("=")
    if not equals or not role or not path:
        raise SystemExit(f"error: --model {text!r}: expected ROLE=PATH")
    return role, Path(path)


def backend(args: argparse.Namespace) -> tuple:
    if args.base_url is None:
        return OfflineExplainer(), OfflineSimulator()
    from sparsecircuits.explain.llm import LLMClient, LLMExplainer, LLMSimulator

    if not args.llm_model:
        raise SystemExit("error: --base-url needs --llm-model")
    client = LLMClient(args.base_url, args.llm_model, ExplanationStore(args.db))
    return LLMExplainer(client), LLMSimulator(client)


def settings_of(args: argparse.Namespace) -> dict:
    names = ("hook", "width", "k_grid", "target_ev", "sae_tokens", "eval_tokens", "units")
    return {name: getattr(args, name) for name in (*names, "tokens", "seed")} | {
        "backend": "offline" if args.base_url is None else f"openai {args.llm_model}"
    }


def choose_sae(run, role: str, args: argparse.Namespace) -> dict:  # noqa: ANN001
    """Train (or reuse) an SAE per k of the grid; the smallest k reaching the target."""
    tried = []
    for k in sorted(int(value) for value in args.k_grid.split(",")):
        folder = args.work / f"{role}-{args.hook}-w{args.width}-k{k}"
        if not (folder / "config.json").is_file() or (folder / "checkpoints").is_dir():
            config = SAEConfig("topk", run.model_config.d_model, args.width, args.hook, k=k)
            train = SAETrainConfig(tokens=args.sae_tokens, batch_size=1024, seed=args.seed)
            train_sae(run, config, train, folder, resume=folder.exists(), progress=False)
        metrics = evaluate_sae(run, load_sae(folder, run.weights_sha256), args.eval_tokens)
        entry = {"k": k, "folder": str(folder)} | {
            name: metrics[name] for name in ("explained_variance", "l0", "loss_recovered")
        }
        tried.append(entry)
        print(
            f"{role} SAE k {k}: explained variance {entry['explained_variance']:.3f}, "
            f"loss recovered {entry['loss_recovered']:.3f}",
            flush=True,
        )
        if entry["explained_variance"] >= args.target_ev:
            break
    chosen = dict(tried[-1])
    chosen["reached_target"] = chosen["explained_variance"] >= args.target_ev
    chosen["tried"] = tried
    return chosen


def draw(width: int, count: int, seed: int) -> list[int]:
    return sorted(random.Random(seed).sample(range(width), min(count, width)))


def explain(run, label, units, explainer, simulator, store, args) -> list[dict]:  # noqa: ANN001
    """Explain and score `units`, or read back the rows an earlier run stored."""
    settings = RecordSettings(n_tokens=args.tokens, seed=args.seed)
    explain_units(
        run, label, units, explainer, simulator, store, settings, ScoreSettings(),
        progress=False, log=lambda line: None,
    )  # fmt: skip
    names = {unit.name for unit in units}
    rows = [
        dict(row)
        for row in store.for_model(run.weights_sha256)
        if row["unit"] in names and row["explainer"] == explainer.name
    ]
    return rows


def summarise(rows: list[dict]) -> dict:
    summary: dict = {"units": len(rows)}
    for score in SCORES:
        values = [row[score] for row in rows if row[score] is not None]
        summary[score] = interval(values) | {"unscored": len(rows) - len(values)}
        summary[score]["values"] = values
    return summary


def interval(values: list[float], seed: int = 0) -> dict:
    """The mean with its bootstrap interval over the values (units)."""
    if not values:
        return {"mean": None, "low": None, "high": None}
    rng = random.Random(seed)
    means = [statistics.fmean(rng.choices(values, k=len(values))) for _ in range(DRAWS)]
    tail = (1 - LEVEL) / 2
    return {
        "mean": statistics.fmean(values),
        "low": quantile(means, tail),
        "high": quantile(means, 1 - tail),
    }


def differences(sets: dict, roles: list[str]) -> list[dict]:
    """Differences of mean scores between sets (each set's units resampled on their own)."""
    names = list(sets)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    out = []
    for first, second in pairs:
        for score in SCORES:
            x, y = sets[first][score]["values"], sets[second][score]["values"]
            if not x or not y:
                continue
            rng = random.Random(0)
            draws = [
                statistics.fmean(rng.choices(x, k=len(x)))
                - statistics.fmean(rng.choices(y, k=len(y)))
                for _ in range(DRAWS)
            ]
            tail = (1 - LEVEL) / 2
            out.append(
                {
                    "first": first,
                    "second": second,
                    "score": score,
                    "difference": statistics.fmean(x) - statistics.fmean(y),
                    "low": quantile(draws, tail),
                    "high": quantile(draws, 1 - tail),
                }
            )
    return out


def shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_result(result: dict) -> None:
    print("\n| set | units | top-and-random | random-only | ablation |")
    print("|---|---|---|---|---|")
    for name, summary in result["sets"].items():
        cells = []
        for score in SCORES:
            entry = summary[score]
            cells.append(
                f"{shown(entry['mean'])} [{shown(entry['low'])}, {shown(entry['high'])}]"
                + (f" ({entry['unscored']} unscored)" if entry["unscored"] else "")
            )
        print(f"| {name} | {summary['units']} | " + " | ".join(cells) + " |")
    level = round(100 * LEVEL)
    print(f"\ndifferences of means ({level}% bootstrap intervals over units):")
    for entry in result["differences"]:
        print(
            f"  {entry['score']}: {entry['first']} - {entry['second']} = "
            f"{entry['difference']:+.3f} [{entry['low']:+.3f}, {entry['high']:+.3f}]"
        )
    for role, chosen in result["saes"].items():
        target = "" if chosen["reached_target"] else " (target not reached)"
        print(
            f"{role}: SAE k {chosen['k']}{target}, explained variance "
            f"{chosen['explained_variance']:.3f}, loss recovered {chosen['loss_recovered']:.3f}"
        )
    print(f"{result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
