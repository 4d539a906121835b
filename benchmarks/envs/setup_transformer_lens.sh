#!/usr/bin/env bash
# Creates benchmarks/.venv-tl, the TransformerLens venv that benchmarks/cache_throughput.py runs
# its other side in (torch==2.13.0 resolves to the local CPU wheel on our machines).
exec "$(dirname "$0")/setup_venv.sh" .venv-tl envs/transformer_lens.txt \
  "from importlib.metadata import version as v; from transformer_lens import HookedTransformer; print('transformer_lens', v('transformer_lens'), 'torch', v('torch'))"
