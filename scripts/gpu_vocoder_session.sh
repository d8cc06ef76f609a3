#!/usr/bin/env bash
# Train the mel vocoder (Vocos, `python -m arrowdiff.speech.train_vocoder`) on one GPU, calibrated to fill
# BUDGET_S, and unpack the TTS training data for the next call on the same machine. Inputs are built on a
# CPU beforehand and travel in .carry/ (xz-compressed):
#
#   python -m arrowdiff.speech.build_data --out data/speech --train 3000 --val 100 --heldout 60 --workers 2
#   python scripts/pack_speech.py --data data/speech --out .carry/vocoder --train 400 --val 30 --waves
#   python scripts/pack_speech.py --data data/speech --out .carry/speech --train 1800
#   BUDGET_S=240 OUT=$OUT scripts/gpu_vocoder_session.sh                                     # on the GPU
#   DEVICE=cpu BUDGET_S=20 MAX_STEPS=20 OUT=/tmp/o scripts/gpu_vocoder_session.sh             # CPU smoke run
set -euo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
DEVICE=${DEVICE:-cuda}; BUDGET_S=${BUDGET_S:-240}; MAX_STEPS=${MAX_STEPS:-40000}; RUNS=${RUNS:-runs}
OUT=${OUT:?set OUT}; BATCH=${BATCH:-32}; mkdir -p "$RUNS" "$OUT"
BF16=$([ "$DEVICE" = cuda ] && echo --bf16 || true)
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
unpack() {  # .carry/<name> -> data/<name>
  [ -d ".carry/$1" ] || return 0
  mkdir -p "data/$1"
  for f in ".carry/$1"/*; do
    case "$f" in *.xz) xz -d -c "$f" > "data/$1/$(basename "${f%.xz}")" ;; *) cp "$f" "data/$1/" ;; esac
  done
}
unpack vocoder
unpack speech &  # for the TTS call that follows on this machine
per_step() {
  python - "$1" <<'PY'
import json, sys
log = [json.loads(l) for l in open(sys.argv[1]) if '"loss' in l or '"elapsed_s"' in l]
log = [r for r in log if "elapsed_s" in r and "step" in r]
print((log[-1]["elapsed_s"] - log[1]["elapsed_s"]) / max(1, log[-1]["step"] - log[1]["step"]))
PY
}
ARGS="--data data/vocoder --device $DEVICE $BF16 --batch-size $BATCH --segment 16384 --lr 5e-4 --seed 0"
rm -rf "$RUNS/cal-vocoder"
python -m arrowdiff.speech.train_vocoder $ARGS --gan --steps 40 --warmup 5 --log-every 5 --eval-every 100000 \
  --ckpt-every 100000 --no-export --samples 0 --out "$RUNS/cal-vocoder" > "$RUNS/cal-vocoder.log" 2>&1 \
  || { tail -20 "$RUNS/cal-vocoder.log"; exit 1; }
PER=$(per_step "$RUNS/cal-vocoder/log.jsonl")
STEPS=$(python -c "print(max(20, min($MAX_STEPS, int($BUDGET_S * 0.85 / $PER) // 100 * 100)))")
echo "vocoder: $PER s/step -> $STEPS steps (budget ${BUDGET_S}s)"
rm -rf "$RUNS/vocoder"
python -m arrowdiff.speech.train_vocoder $ARGS --steps "$STEPS" --warmup $(( STEPS / 25 + 1 )) \
  --gan --gan-start $(( STEPS / 4 )) --log-every 50 --eval-every $(( STEPS / 2 )) --ckpt-every 1000000 \
  --out "$RUNS/vocoder" > "$RUNS/vocoder.log" 2>&1 || { tail -30 "$RUNS/vocoder.log"; exit 1; }
grep '"val_' "$RUNS/vocoder/log.jsonl" | tail -2
wait
ls data/speech | head -20
tar cf - "$RUNS/vocoder"/{model,log.jsonl,command.txt} "$RUNS/vocoder/samples" 2>/dev/null \
  | split -b 15M - "$OUT/vocoder.tar.part-"
ls -la "$OUT"
