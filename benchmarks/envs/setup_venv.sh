#!/usr/bin/env bash
# Creates (or completes) benchmarks/VENV from envs/REQUIREMENTS, for a benchmark's other side:
#   envs/setup_venv.sh VENV REQUIREMENTS CHECK_PYTHON_CODE
# TORCH as in the Makefile; it must satisfy the torch pin of REQUIREMENTS.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$1
REQUIREMENTS=$2
CHECK=$3
PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-torch==2.13.0}
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
# torch first, alone, so the resolver finds it installed and never fetches another build.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "$TORCH"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQUIREMENTS"
"$VENV/bin/python" -c "$CHECK"
