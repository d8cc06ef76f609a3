#!/usr/bin/env bash
# Train the shipped default model (masked diffusion) and its equal-compute AR baseline side by side on
# one GPU, with the same `arrowdiff train` command used on CPU. Both runs see identical batches (same
# seed, same data, same steps), so their compute is equal by construction.
#
#   PRESET=base BUDGET_S=390 scripts/gpu_session.sh            # on the GPU machine ($OUT receives results)
#   PRESET=tiny DEVICE=cpu BUDGET_S=20 OUT=/tmp/o scripts/gpu_session.sh   # the same flow on a CPU
#
# A short calibration run measures the step time of both objectives running together; the step count
# is then chosen to fill BUDGET_S seconds (capped at MAX_STEPS) and printed, so the exact command is
# in the log and recorded in each model's metadata.json.
set -euo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PRESET=${PRESET:-base}; DEVICE=${DEVICE:-cuda}; BUDGET_S=${BUDGET_S:-390}; MAX_STEPS=${MAX_STEPS:-4000}
BATCH=${BATCH:-256}; SEQ=${SEQ:-256}; LR=${LR:-1e-3}; RUNS=${RUNS:-runs}; OUT=${OUT:?set OUT}
BF16=$([ "$DEVICE" = cuda ] && echo --bf16 || true)
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__)"

common() { echo --preset "$PRESET" --data data/shards --device "$DEVICE" $BF16 --batch-size "$BATCH" \
  --seq-len "$SEQ" --lr "$LR" --seed 0 --export-bits 8; }

# 1. calibrate: 30 steps of both objectives at once
rm -rf "$RUNS/cal-mdlm" "$RUNS/cal-ar"
python -m arrowdiff train $(common) --objective mdlm --steps 30 --warmup 5 --eval-every 1000 --ckpt-every 1000 \
  --no-export --out "$RUNS/cal-mdlm" >/dev/null 2>&1 &
python -m arrowdiff train $(common) --objective ar --steps 30 --warmup 5 --eval-every 1000 --ckpt-every 1000 \
  --no-export --out "$RUNS/cal-ar" >/dev/null 2>&1 &
wait
STEPS=$(python - "$RUNS" "$BUDGET_S" "$MAX_STEPS" <<'PY'
import json, sys
runs, budget, cap = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
per_step = []
for o in ("mdlm", "ar"):
    log = [json.loads(l) for l in open(f"{runs}/cal-{o}/log.jsonl")]
    per_step.append((log[-1]["elapsed_s"] - log[9]["elapsed_s"]) / (len(log) - 10))
# evaluation every 500 steps costs a little: keep 8% slack
steps = int(budget * 0.92 / max(per_step))
print(max(100, min(cap, steps // 100 * 100)))
PY
)
WARMUP=$(( STEPS / 20 ))
echo "calibrated: $STEPS steps (budget ${BUDGET_S}s), warmup $WARMUP"

# 2. train both for the same steps on the same batches
for o in mdlm ar; do
  rm -rf "$RUNS/$PRESET-$o"
  python -m arrowdiff train $(common) --objective $o --steps "$STEPS" --warmup "$WARMUP" --eval-every 500 \
    --ckpt-every 500 --out "$RUNS/$PRESET-$o" > "$RUNS/$PRESET-$o.log" 2>&1 &
done
wait
for o in mdlm ar; do grep '"val_' "$RUNS/$PRESET-$o/log.jsonl" | tail -3; done

# 3. results back: both model dirs (INT8) with logs, split into parts that fit the transfer limits
tar cf - --exclude tokenizer.json "$RUNS/$PRESET-mdlm"/{model,log.jsonl,command.txt} \
  "$RUNS/$PRESET-ar"/{model,log.jsonl,command.txt} | split -b 15M - "$OUT/runs.tar.part-"
ls -la "$OUT"
