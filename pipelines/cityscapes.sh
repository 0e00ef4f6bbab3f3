#!/usr/bin/env bash
# The paper's Cityscapes stores (METHOD §3): train with random scale 0.5-2.0, 640x640 crops and
# flips (80 variants, one per epoch), val as full 1024x2048 images, in one Zarr store.
#
#   pipelines/cityscapes.sh /data/cityscapes /stores/cs-cheng2020-q3 cheng2020 3
set -euo pipefail
ROOT=${1:?dataset root}; OUT=${2:?store folder}; CODER=${3:-cheng2020}; QUALITY=${4:-3}
VARIANTS=${VARIANTS:-80}; ENCODERS=${ENCODERS:-auto}; FORMAT=${FORMAT:-zarr}
COMMON=(--coder "$CODER" --quality "$QUALITY" --dataset cityscapes --root "$ROOT" --out "$OUT"
        --format "$FORMAT" --encoders "$ENCODERS" --shard-size 100)

latentstore build "${COMMON[@]}" --split train --variants "$VARIANTS"
latentstore build "${COMMON[@]}" --split val
latentstore verify "$OUT" --decode 20
