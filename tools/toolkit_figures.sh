#!/usr/bin/env bash
# The toolkit figures of README.md and docs/toolkit.md, from the shipped reference models.
#   bash tools/toolkit_figures.sh   (about 3 minutes on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
SC=.venv/bin/sparsecircuits
OUT=${OUT:-runs/toolkit}
rm -rf "$OUT" && mkdir -p docs/toolkit
$SC trace models/reference-sparse --task single_double_quote --n 1 --samples 20 --kind resid --last 12 --out "$OUT/trace"
$SC probe models/reference-sparse --task single_double_quote --out "$OUT/probe"
$SC patch models/reference-sparse --task single_double_quote --site heads --out "$OUT/patch"
for model in reference-sparse reference-sparse-topk reference-dense reference-dense-matched; do
  echo "== $model"
  $SC heads "models/$model" --out "$OUT/heads-$model"
done
cp "$OUT/trace/single_double_quote-trace-resid.png" docs/toolkit/trace-quote.png
cp "$OUT/probe/single_double_quote-probe-resid.png" docs/toolkit/probe-quote.png
cp "$OUT/patch/single_double_quote-heads-activation.png" docs/toolkit/patch-heads-quote.png
