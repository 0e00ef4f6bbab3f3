#!/usr/bin/env bash
# The paper's ImageNet stores (METHOD §3, §5): train with 16 augmentation variants and
# ResNet-50 teacher maps at strides 8/16/32, val with one center crop; then verify.
#
#   pipelines/imagenet.sh /data/imagenet /stores/in1k-cheng2020-q3 cheng2020 3
#
# On a SLURM array, run the train build as parts and seal once all have finished:
#   sbatch --array=0-63 --wrap "PART=auto pipelines/imagenet.sh ..."   # each task: --part auto
#   latentstore seal /stores/in1k-cheng2020-q3
set -euo pipefail
ROOT=${1:?dataset root}; OUT=${2:?store folder}; CODER=${3:-cheng2020}; QUALITY=${4:-3}
VARIANTS=${VARIANTS:-16}; ENCODERS=${ENCODERS:-auto}; PART=${PART:-}
COMMON=(--coder "$CODER" --quality "$QUALITY" --dataset imagenet --root "$ROOT" --out "$OUT" --encoders "$ENCODERS")

latentstore build "${COMMON[@]}" --split train --variants "$VARIANTS" \
    --teacher resnet50 --teacher-strides 8,16,32 --teacher-dtype float16 ${PART:+--part "$PART"}
if [ -z "$PART" ]; then
    latentstore build "${COMMON[@]}" --split val
    latentstore verify "$OUT" --decode 100
fi
