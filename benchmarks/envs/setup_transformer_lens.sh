#!/usr/bin/env bash
# Creates benchmarks/.venv-tl, the TransformerLens venv that benchmarks/cache_throughput.py runs
# its other side in. TORCH as in the Makefile; it must satisfy the torch pin of
# transformer_lens.txt (torch==2.13.0 resolves to the local CPU wheel on our machines).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-torch==2.13.0}
VENV=.venv-tl
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
# torch first, alone, so the resolver finds it installed and never fetches another build.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "$TORCH"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r envs/transformer_lens.txt
"$VENV/bin/python" -c "from importlib.metadata import version as v; from transformer_lens import HookedTransformer; print('transformer_lens', v('transformer_lens'), 'torch', v('torch'))"
