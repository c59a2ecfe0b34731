#!/usr/bin/env bash
# The GPU benchmark matrix of docs/benchmarks.md (the "MFU ladder"), in ONE Python process (`apa bench
# --mode cases`), so the libraries are imported once and each case only builds its model:
#   1. both LoRA configs x each trainer preset (paper_table3, fits_24gb, b16x4, b32x2, fast_b64x1) as configured;
#   2. generation (evaluation's batching, answers forced to their reference's token length) at 3 token budgets, per
#      LoRA config;
#   3. each preset with activation checkpointing flipped;
#   4. extras: generation with a static KV cache and transformers' torch.compile of the decoding step; flash-attention
#      2 in the language model and Liger kernels where their package is installed; torch.compile of the training step
#      only with COMPILE_TRAIN=1 (on the CPU dry run it recompiled for every batch shape: 77 s a step).
# The full-size architecture with random weights (model=phi4mm_random), the bundled sample (its 40 training examples
# repeated to fill every step); no network needed. A case that fails (out of memory, a missing kernel) is a row of
# the results too. No case starts after DEADLINE_S (420 s), and the process is stopped at DEADLINE_S + 60 s, so the
# run stays within ~8 minutes; results.jsonl and summary.md keep every case that finished.
#
#   bash scripts/gpu_bench.sh                         on a GPU machine; figures in $OUT (or ./bench-out)
#   APA_BENCH_MODEL=tiny bash scripts/gpu_bench.sh    dry run of the same matrix on a CPU: the tiny model, every
#                                                     batch divided by 8 (accumulation kept), small budgets
# Environment: OUT, STEPS (measured optimizer steps, 2), WARMUP (1), DEADLINE_S (420), BUDGETS ("8192 32768
# 131072"), ANSWERS (512), EVAL_GPUS (8: the ranks the data-parallel evaluation line projects for), COMPILE_TRAIN=1, DATA_BENCH=1 to also time the data pipeline, PYTHON (python3). Where the
# project is not installed (a bare GPU image), wheels in .whl/ are put on PYTHONPATH first.
# Output: $OUT/results.jsonl (one JSON object per case: name, mode, overrides, ok, result or error, wall_s),
# $OUT/summary.md (the tables for docs/benchmarks.md), $OUT/cases.txt, $OUT/bench.log, $OUT/versions.txt.
set -uo pipefail
out="${OUT:-bench-out}"; mkdir -p "$out"
model="${APA_BENCH_MODEL:-phi4mm_random}"
steps="${STEPS:-2}"; warmup="${WARMUP:-1}"; deadline="${DEADLINE_S:-420}"
budgets="${BUDGETS:-8192 32768 131072}"; answers="${ANSWERS:-512}"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
fi
py="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 APA_CACHE_DIR="${APA_CACHE_DIR:-/tmp/apa-cache}"

{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  git rev-parse HEAD 2>/dev/null
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  fi
  "$py" - <<'EOF'
import importlib.metadata as m
import importlib.util
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "device",
      torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
for name in ("transformers", "trl", "peft", "accelerate", "datasets", "flash-attn", "liger-kernel"):
    try:
        print(name, m.version(name))
    except m.PackageNotFoundError:
        print(name, "not installed")
EOF
} | tee "$out/versions.txt"

common=(model="$model" data=sample data.limit=null)
loras=(fresh_r64 pretrained_r320)
presets=(paper_table3 fits_24gb b16x4 b32x2 fast_b64x1)
if [ "$model" = tiny ]; then
  # CPU dry run: the same cases with every micro-batch / 8 (as tests/training/test_presets.py scales them), no workers
  common+=(trainer.dataloader_num_workers=0 trainer.dataloader_persistent_workers=false trainer.dataloader_pin_memory=false)
  budgets="${BUDGETS:-512 2048 8192}"; answers="${ANSWERS:-16}"
fi
value() {  # value <preset> <key>: the preset's own setting, from its YAML
  awk -F'[:#]' -v k="$2" '$1 == k { gsub(/ /, "", $2); print $2 }' "conf/trainer/$1.yaml"
}
scaled() {  # the dry run's batch override for a preset, or nothing on a GPU
  [ "$model" = tiny ] && echo "trainer.per_device_train_batch_size=$(( $(value "$1" per_device_train_batch_size) / 8 ))"
}
has() { "$py" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)" 2>/dev/null; }

cases="$out/cases.txt"
{
  echo "# name mode overrides (apa.bench.cli --mode cases); common: ${common[*]}"
  for lora in "${loras[@]}"; do for p in "${presets[@]}"; do
    echo "${lora}_$p train lora=$lora trainer=$p $(scaled "$p")"
  done; done
  for lora in "${loras[@]}"; do echo "gen_$lora generate lora=$lora"; done
  for lora in "${loras[@]}"; do for p in "${presets[@]}"; do
    if [ "$(value "$p" activation_checkpointing)" = true ]; then flip=false; else flip=true; fi
    echo "${lora}_${p}_checkpointing_$flip train lora=$lora trainer=$p trainer.activation_checkpointing=$flip $(scaled "$p")"
  done; done
  echo "gen_fresh_r64_static_compiled generate lora=fresh_r64 gen.budgets=${budgets##* } gen.cache_implementation=static gen.compile=true"
  if has flash_attn; then
    echo "fresh_r64_fast_b64x1_flash2 train lora=fresh_r64 trainer=fast_b64x1 model.attn_implementation=flash_attention_2 $(scaled fast_b64x1)"
  else
    echo "# flash-attn not installed: no flash_attention_2 case"
  fi
  if has liger_kernel; then
    echo "fresh_r64_fast_b64x1_liger train lora=fresh_r64 trainer=fast_b64x1 trainer.use_liger_kernel=true $(scaled fast_b64x1)"
  else
    echo "# liger-kernel not installed: no Liger case"
  fi
  if [ "${COMPILE_TRAIN:-0}" = 1 ]; then
    echo "fresh_r64_fast_b64x1_compiled train lora=fresh_r64 trainer=fast_b64x1 trainer.torch_compile=true $(scaled fast_b64x1)"
  fi
} > "$cases"
echo "== $(grep -vc '^#' "$cases") cases, deadline ${deadline} s: $cases"

rm -f "$out/results.jsonl"
# shellcheck disable=SC2086  # budgets is a list of numbers
timeout -k 10 "$((deadline + 60))" /usr/bin/time -v "$py" -m apa bench "${common[@]}" --mode cases --cases "$cases" --results "$out/results.jsonl" \
  --summary "$out/summary.md" --deadline-s "$deadline" --steps "$steps" --warmup "$warmup" \
  --budgets $budgets --answers "$answers" > "$out/bench.log" 2>&1
code=$?; echo "exit $code$([ "$code" = 124 ] && echo ' (stopped at the deadline; the finished cases are kept)')"
grep -E "Maximum resident|Elapsed" "$out/bench.log"
cat "$out/summary.md" 2>/dev/null

# Data-parallel evaluation (torchrun evaluate.py): each rank generates whole batches on its own GPU and shares
# nothing until its checkpoint is done, so a rank's answers/s is a single process's. The projection for a Table-3
# sweep (9 checkpoints x 5,000 answers: 4 epochs x 2 settings + the baseline) on EVAL_GPUS (8) ranks follows from it;
# the last batch of each checkpoint leaves the other ranks idle for up to one batch (not in the projection).
"$py" - "$out/results.jsonl" "${EVAL_GPUS:-8}" <<'PROJECTION' | tee -a "$out/summary.md"
import json, sys
gpus, budget = int(sys.argv[2]), "32768"  # evaluate.yaml's max_batch_tokens
print(f"\n| data-parallel evaluation (budget {budget}) | answers/s per rank | 9 x 5,000 answers on 1 rank | "
      f"on {gpus} ranks |\n|---|---|---|---|")
for line in open(sys.argv[1]):
    case = json.loads(line)
    rate = case["ok"] and case["mode"] == "generate" and case["result"]["budgets"].get(budget, {}).get("answers_per_s")
    if rate and not case["result"]["config"].get("cache_implementation"):
        minutes = 9 * 5000 / rate / 60
        print(f"| {case['name']} | {rate:.1f} | {minutes:.0f} min | {minutes / gpus:.0f} min |")
PROJECTION

if [ "${DATA_BENCH:-0}" = 1 ]; then
  echo "== data pipeline"
  "$py" -m apa bench model="$model" data=sample data.limit=null --mode data --workers 0 2 4 --batches 20 \
    --json "$out/data.json" > "$out/data.log" 2>&1; echo "exit $?"; tail -12 "$out/data.log"
fi
