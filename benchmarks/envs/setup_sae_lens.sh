#!/usr/bin/env bash
# Creates benchmarks/.venv-saelens, the SAELens venv that benchmarks/sae_throughput.py runs its
# other side in. TORCH as in the Makefile; it must satisfy the torch pin of sae_lens.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-torch==2.13.0}
VENV=.venv-saelens
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
# torch first, alone, so the resolver finds it installed and never fetches another build.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "$TORCH"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r envs/sae_lens.txt
"$VENV/bin/python" -c "from importlib.metadata import version as v; import sae_lens; print('sae_lens', v('sae_lens'), 'torch', v('torch'))"
