#!/usr/bin/env bash
# R4.5 on one GPU: train ONLY the image head and caption conditioner (< 10M parameters) on the FROZEN
# text-trained backbone (base-int8), for the same number of image steps and images per step as the joint
# run of scripts/gpu_finetune_session.sh, so its validation flow loss compares with the jointly trained
# model's. Inputs in .carry/ (shards xz-compressed; latents from `python -m arrowdiff.training.image_data`)
# and the VAE those latents came from (its path is in the latent manifest).
#
#   STEPS=2050 OUT=$OUT scripts/gpu_frozen_head.sh
set -euo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
STEPS=${STEPS:-2050}; DEVICE=${DEVICE:-cuda}; OUT=${OUT:?set OUT}; RUNS=${RUNS:-runs}
mkdir -p data/shards && cp .carry/shards/manifest.json data/shards/ && cp .carry/tokenizer.json data/
for f in .carry/shards/*.xz; do xz -d -c "$f" > "data/shards/$(basename "${f%.xz}")"; done
# --text-weight 0 never reads training text: a shard that did not travel becomes zeros of its size
python - <<'PY'
import json, os
m = json.load(open("data/shards/manifest.json"))
for key, e in m["shards"].items():
    p = os.path.join("data/shards", e["file"])
    if not os.path.exists(p):
        with open(p, "wb") as f:
            f.truncate(int(e["tokens"]) * 2)
PY
rm -rf data/image_latents && cp -r .carry/image_latents data/image_latents
BF16=$([ "$DEVICE" = cuda ] && echo --bf16 || true)
python -m arrowdiff train --preset base --data data/shards --init-from src/arrowdiff/pretrained/base-int8 \
  --images data/image_latents --image-batch-size 256 --freeze-backbone --text-weight 0 --batch-size 8 \
  --lr 1e-3 --steps "$STEPS" --warmup 100 --eval-every $(( STEPS / 2 )) --ckpt-every 1000000 \
  --device "$DEVICE" $BF16 --seed 1 --export-bits 8 --out "$RUNS/frozen" > "$RUNS/frozen.log" 2>&1
grep '"val_' "$RUNS/frozen/log.jsonl" | tail -2
cp "$RUNS/frozen/log.jsonl" "$RUNS/frozen/command.txt" "$OUT/"
cp "$RUNS/frozen/model/heads/image.parquet" "$RUNS/frozen/model/conditioners/caption.parquet" \
  "$RUNS/frozen/model/metadata.json" "$OUT/"
ls -la "$OUT"
