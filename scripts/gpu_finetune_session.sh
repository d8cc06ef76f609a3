#!/usr/bin/env bash
# Continue training the shipped model on one GPU with memory conditioning (`arrowdiff train --memory`,
# condition dropout 0.2) and, when image latents are given, jointly with text-to-image flow matching
# (`--images`: image head + caption conditioner on the same backbone). The same command runs on a CPU.
# Its inputs are built beforehand on a CPU and travel in .carry/ (shards and pixels xz-compressed):
#
#   python -m arrowdiff.training.memory_data --data data/shards --out data/memory            # ~20 min
#   python -m arrowdiff.training.image_data --images data/images --vae runs/vae/model --out data/image_latents
#   xz -9 -k data/shards/*.bin (move the .xz files to .carry/shards/) && cp data/shards/manifest.json .carry/shards/
#   BUDGET_S=420 OUT=$OUT scripts/gpu_finetune_session.sh                                     # on the GPU
#   PRESET=tiny DEVICE=cpu BUDGET_S=20 MAX_STEPS=40 INIT= OUT=/tmp/o scripts/gpu_finetune_session.sh  # CPU
#
# A 20-step calibration run measures the step time; the step count is then chosen to fill BUDGET_S and
# printed, so the exact command is in the log and in the model's metadata.json. When the image pixels
# travel (.carry/images), the VAE is trained first (calibrated to VAE_BUDGET_S) and every image encoded.
set -euo pipefail
CARRY=${CARRY:-.carry}  # where the inputs arrived
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PRESET=${PRESET:-base}; DEVICE=${DEVICE:-cuda}; BUDGET_S=${BUDGET_S:-270}; MAX_STEPS=${MAX_STEPS:-4000}
BATCH=${BATCH:-256}; SEQ=${SEQ:-256}; LR=${LR:-3e-4}; RUNS=${RUNS:-runs}; OUT=${OUT:?set OUT}; mkdir -p "$OUT" "$RUNS"
INIT=${INIT-src/arrowdiff/pretrained/default}; DATA=${DATA:-data/shards}; MEMORY=${MEMORY:-data/memory}
IMAGES=${IMAGES:-data/image_latents}; IMAGE_BATCH=${IMAGE_BATCH:-256}
BF16=$([ "$DEVICE" = cuda ] && echo --bf16 || true)
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true

if [ -d $CARRY/shards ]; then  # shards travel xz-compressed: unpack next to their tokenizer
  mkdir -p data/shards && cp $CARRY/shards/manifest.json data/shards/
  for f in $CARRY/shards/*.xz; do xz -d -c "$f" > "data/shards/$(basename "${f%.xz}")"; done
  cp $CARRY/tokenizer.json data/tokenizer.json
fi
for d in memory image_latents; do
  [ -d "$CARRY/$d" ] && { mkdir -p data; rm -rf "data/$d"; cp -r "$CARRY/$d" "data/$d"; }
done
if [ -d $CARRY/speech ]; then  # speech data (mels, phones, durations) travels xz-compressed
  mkdir -p data/speech
  for f in $CARRY/speech/*; do
    case "$f" in *.xz) xz -d -c "$f" > "data/speech/$(basename "${f%.xz}")" ;; *) cp "$f" data/speech/ ;; esac
  done
fi
SPEECH=${SPEECH:-data/speech}
if [ -n "${REQUIRE_SPEECH:-}" ] && [ ! -f "$SPEECH/manifest.json" ]; then
  echo "no speech data at $SPEECH (it is unpacked by scripts/gpu_vocoder_session.sh on the same machine)"; exit 3
fi
per_step() {  # seconds per step of a calibration run's log.jsonl, from step 5 on
  python - "$1" <<'PY'
import json, sys
log = [json.loads(l) for l in open(sys.argv[1])]
print((log[-1]["elapsed_s"] - log[4]["elapsed_s"]) / (len(log) - 5))
PY
}
steps_for() { python -c "print(max(20, min($3, int($1 * 0.9 / $2) // 50 * 50)))"; }

# images: train the VAE here too when the pixels travel, then encode every image with it
if [ -d $CARRY/images ]; then
  mkdir -p data/images
  for f in $CARRY/images/*; do
    case "$f" in *.xz) xz -d -c "$f" > "data/images/$(basename "${f%.xz}")" ;; *) cp "$f" data/images/ ;; esac
  done
  VAE_ARGS="--data data/images --device $DEVICE --batch-size ${VAE_BATCH:-128} --lr 1e-3 --seed 0"
  if python -m arrowdiff.image.train_vae $VAE_ARGS --steps 30 --warmup 5 --eval-every 1000 --no-export \
       --out "$RUNS/cal-vae" >/dev/null 2>&1; then
    VAE_STEPS=$(steps_for "${VAE_BUDGET_S:-100}" "$(per_step "$RUNS/cal-vae/log.jsonl")" 20000)
    echo "vae: $VAE_STEPS steps"
    python -m arrowdiff.image.train_vae $VAE_ARGS --steps "$VAE_STEPS" --warmup $(( VAE_STEPS / 20 + 1 )) \
      --eval-every $(( VAE_STEPS / 2 )) --ckpt-every 1000000 --out "$RUNS/vae" > "$RUNS/vae.log" 2>&1 \
      && python -m arrowdiff.training.image_data --part latents --vae "$RUNS/vae/model" --out "$IMAGES" \
        --device "$DEVICE" || echo "image stage failed: training without images"
    tail -2 "$RUNS/vae.log"
  fi
fi
IMG=$([ -f "$IMAGES/manifest.json" ] && echo --images "$IMAGES" --image-batch-size "$IMAGE_BATCH" || true)
SPK=$([ -f "$SPEECH/manifest.json" ] && echo --speech "$SPEECH" --speech-batch-size "${SPEECH_BATCH:-64}" || true)
MEM=$([ -f "$MEMORY/manifest.json" ] && echo --memory "$MEMORY" || true)
VOC=$([ -f "$RUNS/vocoder/model/metadata.json" ] && echo --vocoder "$RUNS/vocoder/model" || true)

common() { echo --preset "$PRESET" --data "$DATA" $MEM --device "$DEVICE" $BF16 \
  --batch-size "$BATCH" --seq-len "$SEQ" --lr "$LR" --seed 1 --export-bits 8 ${INIT:+--init-from "$INIT"} $IMG \
  $SPK $VOC ${EXTRA:-}; }

rm -rf "$RUNS/cal-finetune"
python -m arrowdiff train $(common) --steps 20 --warmup 5 --eval-every 1000 --ckpt-every 1000 --no-export \
  --out "$RUNS/cal-finetune" >/dev/null 2>&1
STEPS=$(steps_for "$BUDGET_S" "$(per_step "$RUNS/cal-finetune/log.jsonl")" "$MAX_STEPS")
echo "calibrated: $STEPS steps (budget ${BUDGET_S}s)"
rm -rf "$RUNS/finetune"
python -m arrowdiff train $(common) --steps "$STEPS" --warmup $(( STEPS / 20 + 1 )) \
  --eval-every $(( STEPS / 4 )) --ckpt-every 1000000 --out "$RUNS/finetune" > "$RUNS/finetune.log" 2>&1
grep '"val_' "$RUNS/finetune/log.jsonl" | tail -4
VAE_FILES=$([ -d "$RUNS/vae/model" ] && echo "$RUNS/vae/model $RUNS/vae/log.jsonl $RUNS/vae/command.txt" || true)
tar cf - --exclude tokenizer.json "$RUNS/finetune"/{model,log.jsonl,command.txt} $VAE_FILES \
  | split -b 15M - "$OUT/finetune.tar.part-"
ls -la "$OUT"
