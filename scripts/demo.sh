#!/usr/bin/env bash
# Set up, build a store from the bundled demo photos (ImageNet layout), summarize it, read it back,
# and check every sample against CompressAI's own decoder (fails if any ŷ is not exact).
#   scripts/demo.sh                      # seeded random coder weights: runs offline
#   WEIGHTS=pretrained scripts/demo.sh   # CompressAI's released weights (downloads once, ~30 MB)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
WEIGHTS=${WEIGHTS:-untrained}
OUT=${OUT:-stores/demo-cheng2020-q3}
DEMO=latentstore/data/demo-imagenet
.venv/bin/latentstore build --coder cheng2020 --quality 3 --weights "$WEIGHTS" \
    --dataset imagenet --root "$DEMO" --split train --variants 2 --shard-size 2 --out "$OUT" > /dev/null
.venv/bin/latentstore build --coder cheng2020 --quality 3 --weights "$WEIGHTS" \
    --dataset imagenet --root "$DEMO" --split val --out "$OUT" --quiet > /dev/null
.venv/bin/latentstore info "$OUT"
echo
echo ">> reading it back with latentstore.open_store:"
.venv/bin/python - "$OUT" <<'PY'
import sys
from torch.utils.data import DataLoader
from latentstore import open_store

# The store batches itself (meta dicts stay lists); DataLoader only adds workers.
ds = open_store(sys.argv[1], split="train", fields=("y_hat", "label", "meta"), batch_size=4)
for epoch in range(2):
    ds.set_epoch(epoch)  # epoch e reads variant e mod K
    for batch in DataLoader(ds, batch_size=None):
        print(f"  epoch {epoch}: y_hat {tuple(batch['y_hat'].shape)} {batch['y_hat'].dtype}  "
              f"labels {batch['label'].tolist()}  bpp {[round(m['bpp'], 3) for m in batch['meta']]}  "
              f"keys {batch['__key__']}")
PY
echo
echo ">> every stored ŷ against CompressAI's decompress():"
.venv/bin/latentstore verify "$OUT" --decode all --quiet
