#!/usr/bin/env bash
# The GPU benchmark of docs/benchmarks.md, as run on a lent machine (no network): the full-size architecture with
# random weights (model=phi4mm_random), batch 8, activation checkpointing on, both LoRA configs, then one efficiency
# switch off (length-grouped batches), then the data pipeline. Figures go to $OUT (or ./bench-out).
#   bash scripts/gpu_bench.sh [steps]
# Where the project is not installed (a bare GPU image), wheels in .whl/ are put on PYTHONPATH first.
set -uo pipefail
out="${OUT:-bench-out}"; mkdir -p "$out"
steps="${1:-20}"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 APA_CACHE_DIR="${APA_CACHE_DIR:-/tmp/apa-cache}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, transformers, trl, peft, datasets, hydra; print('torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__)" | tee -a "$out/gpu.txt"
common=(model=phi4mm_random data=sample data.limit=null trainer.per_device_train_batch_size=8
        trainer.gradient_accumulation_steps=1 --steps "$steps" --warmup 3)
run() {  # name, extra args...
  local name="$1"; shift
  echo "== $name"
  /usr/bin/time -v python3 -m apa.bench "${common[@]}" "$@" --json "$out/$name.json" > "$out/$name.log" 2>&1
  echo "exit $?"; grep -E "steps_per_s|samples_per_s|tokens_per_s|padding|peak_memory_gb|mfu|projected|Error|error" "$out/$name.log" | tail -14
}
run paper_r64 lora=paper_r64
run pretrained_r320 lora=pretrained_r320
run paper_r64_no_length_grouping lora=paper_r64 trainer.train_sampling_strategy=random
echo "== data pipeline"
python3 -m apa.bench model=phi4mm_random data=sample data.limit=null --mode data --workers 0 2 4 --batches 20 \
  --json "$out/data.json" > "$out/data.log" 2>&1; echo "exit $?"; tail -12 "$out/data.log"
