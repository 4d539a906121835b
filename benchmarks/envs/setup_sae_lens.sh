#!/usr/bin/env bash
# Creates benchmarks/.venv-saelens, the SAELens venv that benchmarks/sae_throughput.py runs its
# other side in.
exec "$(dirname "$0")/setup_venv.sh" .venv-saelens envs/sae_lens.txt \
  "from importlib.metadata import version as v; import sae_lens; print('sae_lens', v('sae_lens'), 'torch', v('torch'))"
