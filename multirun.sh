#!/usr/bin/env bash
# Sweep both LoRA configs, evaluate every checkpoint of every job, then compare them (comparison.md/csv, PNGs).
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

echo "== train both LoRA configs, evaluate every checkpoint of each, compare: $sweep_dir"
# One process: the evaluate_and_compare callback (conf/hydra/callbacks/) runs evaluate.py's and apa.compare's code
# after each job and after the sweep, so the libraries are imported once.
"$PY" train.py -m lora=pretrained_r320,paper_r64 hydra/callbacks=evaluate_and_compare "$@"
