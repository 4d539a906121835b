"""Circuit size: weight-sparse models against dense ones, as medians over pruning seeds and
ratios with bootstrap intervals, side by side in one run.

Give the models by role, `--model ROLE=PATH`. The roles make a 2x2 of weight sparsity and
activation sparsity (AbsTopK 1/4 with an attention sink), each dense model loss-matched to its
sparse counterpart, plus a dense model trained with the sparse one's budget:

    sparse-topk   weight-sparse, AbsTopK + sink      dense-topk    dense, AbsTopK + sink
    sparse        weight-sparse, neither             dense         dense, neither
    dense-budget  dense, neither, sparse-topk's training budget

Every model is pruned with the same settings (by default the equal-effort grid of
`prune --sweep 0`) on every task it does (full-model loss on the validation pairs at or below
the target) and one of its ratio partners does too, once per pruning seed (mask init and pair
draws). Printed: per task and model the median edges and their range over seeds, the effort
(mask steps, prompts run, seconds), and each ratio present, with its 90% bootstrap interval
over tasks and seeds (circuits.spread):

    weight sparsity, AbsTopK on both sides     dense-topk / sparse-topk  (the paper's claim)
    weight sparsity, AbsTopK on neither side   dense / sparse
    AbsTopK at weight density 1/16             sparse / sparse-topk
    weight sparsity at a matched budget        dense-budget / sparse-topk

Prunes are stored in the prune store (SQLite) and reused by a later run with the same
settings; --fresh prunes again. The --json file is rewritten after every task and, when it
exists, read first: a prune it records under the same key (the weights' hash, the pairs, the
whole prune config and the recipe version) is reused, so a measurement too long for one sitting
goes on where it stopped, on this machine or another; `--reuse OTHER.json` adds the prunes
another run recorded, so models measured in parallel processes are joined by one final run.

    .venv/bin/python benchmarks/circuit_size.py --model sparse-topk=models/reference-sparse-topk \\
        --model dense-topk=models/reference-dense-d32 --seeds 3 --json sizes.json
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from sparsecircuits.circuits import PruneConfig
from sparsecircuits.circuits.controls import pruned_controls
from sparsecircuits.circuits.seeds import prune_seeds, recorded_prunes, validation_loss
from sparsecircuits.circuits.spread import bootstrap_size_ratio
from sparsecircuits.circuits.store import PruneStore
from sparsecircuits.circuits.task_data import task_splits
from sparsecircuits.files import write_json_atomic
from sparsecircuits.loading import load_run
from sparsecircuits.tasks import TASKS

ROLES = ("sparse-topk", "dense-topk", "sparse", "dense", "dense-budget")
RATIOS = {
    "weight sparsity, AbsTopK on both sides": ("dense-topk", "sparse-topk"),
    "weight sparsity, AbsTopK on neither side": ("dense", "sparse"),
    "AbsTopK at weight density 1/16": ("sparse", "sparse-topk"),
    "weight sparsity at a matched budget": ("dense-budget", "sparse-topk"),
}


def main() -> None:
    args = parse_args()
    paths = dict(args.model)
    runs = {role: load_run(path) for role, path in paths.items()}
    ratios = {name: pair for name, pair in RATIOS.items() if set(pair) <= set(runs)}
    if not ratios:
        raise SystemExit(f"error: no ratio can be formed from the roles {sorted(runs)}")
    tasks = args.tasks.split(",") if args.tasks else list(TASKS)
    store = PruneStore()
    recorded = recorded_prunes([*args.reuse, args.json])
    rows = []
    for task in tasks:
        full = {role: validation_loss(run, task) for role, run in runs.items()}
        done = {role for role, loss in full.items() if loss <= args.target_loss}
        wanted = {role for pair in ratios.values() if set(pair) <= done for role in pair}
        row = {"task": task, "full_validation_loss": full, "models": {}}

        def save_progress(prunes: list[dict], row: dict = row) -> None:
            """After every prune: a sitting cut short keeps all it measured."""
            if args.json:
                done = [prune for result in row["models"].values() for prune in result["prunes"]]
                progress = {"rows": rows, "in_progress": done + prunes, "complete": False}
                write_json_atomic(args.json, progress)

        for role in sorted(wanted, key=ROLES.index):
            row["models"][role] = prune_seeds(
                runs[role],
                paths[role],
                task,
                config_for(args, 0),
                args.seeds,
                store,
                recorded,
                args.fresh,
                after_each=save_progress,
            )
        if args.controls and "sparse-topk" in row["models"]:
            splits = task_splits(runs["sparse-topk"], task, None)
            row["controls"] = pruned_controls(runs["sparse-topk"], splits, config_for(args, 0))
        rows.append(row)
        print(describe(row), flush=True)
        if args.json:
            write_json_atomic(args.json, {"rows": rows, "complete": False})
    summary = summarise(rows, ratios)
    if args.json:
        write_json_atomic(args.json, {"rows": rows, "summary": summary, "complete": True})


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=role_path, action="append", required=True, help="ROLE=PATH, repeated"
    )
    parser.add_argument("--tasks", help="comma-separated task names (default: all)")
    parser.add_argument("--target-loss", type=float, default=0.15)
    parser.add_argument("--seeds", type=int, default=3, help="pruning seeds per model and task")
    parser.add_argument("--sweep", type=int, default=0, help="as prune --sweep (0: the grid)")
    parser.add_argument("--steps", type=int, default=PruneConfig.steps)
    parser.add_argument("--fresh", action="store_true", help="prune again, ignore stored results")
    parser.add_argument("--controls", action="store_true", help="controls for sparse-topk")
    parser.add_argument("--json", type=Path, help="also write the rows and ratios here")
    parser.add_argument(
        "--reuse",
        type=Path,
        action="append",
        default=[],
        help="another run's --json whose recorded prunes are reused (repeatable): runs split "
        "across processes or machines are joined by one run that names them all",
    )
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    return args


def role_path(text: str) -> tuple[str, Path]:
    role, _, path = text.partition("=")
    if role not in ROLES or not path:
        raise argparse.ArgumentTypeError(f"expected ROLE=PATH with ROLE one of {', '.join(ROLES)}")
    return role, Path(path)


def config_for(args: argparse.Namespace, seed: int) -> PruneConfig:
    return PruneConfig(target_loss=args.target_loss, steps=args.steps, sweep=args.sweep, seed=seed)


def describe(row: dict) -> str:
    parts = [row["task"]]
    for role, result in row["models"].items():
        spread, failed = result["edges"], sum("error" in p for p in result["prunes"])
        missed = f", {failed} seeds missed" if failed else ""
        if spread is None:
            parts.append(f"{role}: target not reached")
            continue
        parts.append(
            f"{role}: {spread['median']:,.0f} edges [{spread['min']:,}-{spread['max']:,}]{missed}"
        )
    for name, control in row.get("controls", {}).items():
        verdict = "accepted" if control.get("accepted") else "rejected"
        outcome = f"{control['edges']} edges, {verdict}" if control["met"] else "not met"
        parts.append(f"control {name}: {outcome}")
    if not row["models"]:
        losses = ", ".join(f"{r} {v:.3f}" for r, v in row["full_validation_loss"].items())
        parts.append(f"skipped: not done by both models of any ratio ({losses})")
    return " | ".join(parts)


def summarise(rows: list[dict], ratios: dict[str, tuple[str, str]]) -> dict:
    """Print the median-edges table, the effort per model and every ratio; return them."""
    roles = [role for role in ROLES if any(role in row["models"] for row in rows)]
    print("\n| task | " + " | ".join(roles) + " |")
    print("|---|" + "---|" * len(roles))
    for row in rows:
        cells = [edges_cell(row["models"].get(role)) for role in roles]
        if any(cells):
            print(f"| {row['task']} | " + " | ".join(cells) + " |")
    summary = {"effort": {role: effort_of(rows, role) for role in roles}, "ratios": {}}
    for role, effort in summary["effort"].items():
        print(
            f"{role} effort per prune (median): {effort['mask_steps']:,.0f} mask steps, "
            f"{effort['prompts_run']:,.0f} prompts run, {effort['seconds']:.0f} s"
        )
    for name, (top, bottom) in ratios.items():
        sizes = {role: edges_by_task(rows, role) for role in (top, bottom)}
        try:
            estimate = bootstrap_size_ratio(sizes[top], sizes[bottom])
        except ValueError:
            print(f"{name} ({top} / {bottom}): no task pruned on both")
            continue
        summary["ratios"][name] = {"models": [top, bottom], **estimate.to_dict()}
        print(f"{name} ({top} / {bottom}): {estimate.describe()}")
    return summary


def edges_cell(result: dict | None) -> str:
    if result is None or result["edges"] is None:
        return ""
    spread = result["edges"]
    return f"{spread['median']:,.0f} [{spread['min']:,}-{spread['max']:,}]"


def edges_by_task(rows: list[dict], role: str) -> dict[str, list[float]]:
    """Per task, the edges of every seed that reached the target: what the ratios resample."""
    sizes = {}
    for row in rows:
        prunes = row["models"].get(role, {}).get("prunes", [])
        edges = [prune["edges"] for prune in prunes if "error" not in prune]
        if edges:
            sizes[row["task"]] = edges
    return sizes


def effort_of(rows: list[dict], role: str) -> dict:
    efforts = [
        prune["effort"]
        for row in rows
        for prune in row["models"].get(role, {}).get("prunes", [])
        if prune.get("effort")
    ]
    keys = ("mask_steps", "prompts_run", "seconds")
    if not efforts:
        return dict.fromkeys(keys, 0.0)
    return {key: statistics.median(effort[key] for effort in efforts) for key in keys}


if __name__ == "__main__":
    main()
