#!/usr/bin/env bash
# Continue training the shipped model on one GPU with memory conditioning (`arrowdiff train --memory`,
# condition dropout 0.2) and, when image latents are given, jointly with text-to-image flow matching
# (`--images`: image head + caption conditioner on the same backbone). The same command runs on a CPU.
# Its inputs are built beforehand on a CPU and travel in .carry/ (the shards zstd-compressed):
#
#   python -m arrowdiff.training.memory_data --data data/shards --out data/memory            # ~20 min
#   python -m arrowdiff.training.image_data --images data/images --vae runs/vae/model --out data/image_latents
#   zstd -10 data/shards/*.bin --output-dir-flat .carry/shards && cp data/shards/manifest.json .carry/shards/
#   BUDGET_S=420 OUT=$OUT scripts/gpu_finetune_session.sh                                     # on the GPU
#   PRESET=tiny DEVICE=cpu BUDGET_S=20 MAX_STEPS=40 INIT= OUT=/tmp/o scripts/gpu_finetune_session.sh  # CPU
#
# A 20-step calibration run measures the step time; the step count is then chosen to fill BUDGET_S and
# printed, so the exact command is in the log and in the model's metadata.json.
set -euo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PRESET=${PRESET:-base}; DEVICE=${DEVICE:-cuda}; BUDGET_S=${BUDGET_S:-270}; MAX_STEPS=${MAX_STEPS:-4000}
BATCH=${BATCH:-256}; SEQ=${SEQ:-256}; LR=${LR:-3e-4}; RUNS=${RUNS:-runs}; OUT=${OUT:?set OUT}
INIT=${INIT-src/arrowdiff/pretrained/default}; DATA=${DATA:-data/shards}; MEMORY=${MEMORY:-data/memory}
IMAGES=${IMAGES:-data/image_latents}; IMAGE_BATCH=${IMAGE_BATCH:-256}
BF16=$([ "$DEVICE" = cuda ] && echo --bf16 || true)
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true

if [ -d .carry/shards ]; then  # shards travel compressed: unpack next to their tokenizer
  mkdir -p data/shards && cp .carry/shards/manifest.json data/shards/
  for f in .carry/shards/*.zst; do zstd -q -d -f "$f" -o "data/shards/$(basename "${f%.zst}")"; done
  cp .carry/tokenizer.json data/tokenizer.json
fi
for d in memory image_latents vae; do
  [ -d ".carry/$d" ] && { mkdir -p data; rm -rf "data/$d"; cp -r ".carry/$d" "data/$d"; }
done
[ -d data/vae ] && sed -i 's#"vae": "[^"]*"#"vae": "data/vae"#' "$IMAGES/manifest.json"
IMG=$([ -f "$IMAGES/manifest.json" ] && echo --images "$IMAGES" --image-batch-size "$IMAGE_BATCH" || true)

common() { echo --preset "$PRESET" --data "$DATA" --memory "$MEMORY" --device "$DEVICE" $BF16 \
  --batch-size "$BATCH" --seq-len "$SEQ" --lr "$LR" --seed 1 --export-bits 8 ${INIT:+--init-from "$INIT"} $IMG; }

rm -rf "$RUNS/cal-memory"
python -m arrowdiff train $(common) --steps 20 --warmup 5 --eval-every 1000 --ckpt-every 1000 --no-export \
  --out "$RUNS/cal-memory" >/dev/null 2>&1
STEPS=$(python - "$RUNS" "$BUDGET_S" "$MAX_STEPS" <<'PY'
import json, sys
runs, budget, cap = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
log = [json.loads(l) for l in open(f"{runs}/cal-memory/log.jsonl")]
per_step = (log[-1]["elapsed_s"] - log[4]["elapsed_s"]) / (len(log) - 5)
print(max(20, min(cap, int(budget * 0.9 / per_step) // 50 * 50)))
PY
)
echo "calibrated: $STEPS steps (budget ${BUDGET_S}s)"
rm -rf "$RUNS/memory"
python -m arrowdiff train $(common) --steps "$STEPS" --warmup $(( STEPS / 20 + 1 )) \
  --eval-every $(( STEPS / 4 )) --ckpt-every 1000000 --out "$RUNS/memory" > "$RUNS/memory.log" 2>&1
grep '"val_' "$RUNS/memory/log.jsonl" | tail -4
tar cf - --exclude tokenizer.json "$RUNS/memory"/{model,log.jsonl,command.txt} | split -b 15M - "$OUT/memory.tar.part-"
ls -la "$OUT"
