#!/usr/bin/env bash
# Sweep both LoRA configs, evaluate every checkpoint of every job, then compare them.
#   ./multirun.sh experiment=demo                       the CPU demo (tiny model, bundled sample)
#   ./multirun.sh trainer.num_train_epochs=4 hydra.sweep.dir=outputs/my-sweep      (full corpus from the hub)
# Every argument goes to train.py; exits non-zero as soon as a step fails.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python}"

sweep_dir=""
for arg in "$@"; do
  case "$arg" in hydra.sweep.dir=*) sweep_dir="${arg#hydra.sweep.dir=}" ;; esac
done
if [ -z "$sweep_dir" ]; then
  sweep_dir="outputs/multirun/$(date +%Y-%m-%d_%H-%M-%S)"
  set -- "$@" "hydra.sweep.dir=$sweep_dir"
fi
if [ -d "$sweep_dir" ] && [ -n "$(ls -A "$sweep_dir")" ]; then
  echo "multirun.sh: $sweep_dir already holds results; choose another hydra.sweep.dir (or leave it unset)" >&2
  exit 2
fi

echo "== 1/3 train: $sweep_dir"
"$PY" train.py -m lora=pretrained_r320,paper_r64 "$@"

runs=$(find "$sweep_dir" -mindepth 2 -maxdepth 2 -name training_config.json -printf '%h\n' | sort | paste -sd, -)
if [ -z "$runs" ]; then
  echo "multirun.sh: no run folder was written in $sweep_dir" >&2
  exit 1
fi

echo "== 2/3 evaluate every checkpoint"
"$PY" evaluate.py -m "run_dir=$runs" checkpoint=all

echo "== 3/3 compare"
"$PY" -m apa.compare "$sweep_dir"
