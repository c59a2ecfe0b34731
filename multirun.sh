#!/usr/bin/env bash
# Sweep both LoRA configs, evaluate every checkpoint of every job, then compare them (comparison.md/csv, PNGs, and
# report.html: the comparison with curves and an utterance browser, opened offline in any browser).
#   ./multirun.sh experiment=demo                       the CPU demo (tiny model, bundled sample)
#   ./multirun.sh trainer.num_train_epochs=4 hydra.sweep.dir=outputs/my-sweep      (full corpus from the hub)
#   GPUS=4 ./multirun.sh                each config data parallel on 4 GPUs, then each run's checkpoints evaluated
#                                       data parallel on 4 GPUs (torchrun; LAUNCHER="accelerate launch --multi_gpu
#                                       --num_processes 4" to use accelerate instead)
# Every argument goes to train.py; exits non-zero as soon as a step fails.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python}"

sweep_dir=""
for arg in "$@"; do
  case "$arg" in hydra.sweep.dir=*) sweep_dir="${arg#hydra.sweep.dir=}" ;; esac
done
# as Hydra reads it: quotes around the value (a path with a space) are grammar, not part of the path
case "$sweep_dir" in \'*\') sweep_dir="${sweep_dir:1:${#sweep_dir}-2}" ;; \"*\") sweep_dir="${sweep_dir:1:${#sweep_dir}-2}" ;; esac
if [ -z "$sweep_dir" ]; then
  sweep_dir="outputs/multirun/$(date +%Y-%m-%d_%H-%M-%S)"
  set -- "$@" "hydra.sweep.dir=$sweep_dir"
fi
if [ -d "$sweep_dir" ] && [ -n "$(ls -A "$sweep_dir")" ]; then
  echo "error: $sweep_dir already holds results; choose another hydra.sweep.dir (or leave it unset)" >&2
  exit 2
fi
# a sweep refused before any job wrote anything (no hub, say) leaves no empty folder behind (only an empty one goes)
[ -e "$sweep_dir" ] || trap 'rmdir "$sweep_dir" 2>/dev/null || true' EXIT

GPUS="${GPUS:-1}"
if [ "$GPUS" -le 1 ]; then
  echo "== train both LoRA configs, evaluate every checkpoint of each, compare: $sweep_dir"
  # One process: the evaluate_and_compare callback (conf/hydra/callbacks/) runs evaluate.py's and apa.reporting.compare's
  # code after each job and after the sweep, so the libraries are imported once. It checks the model and data sources
  # before the first job (no hub: one error line, exit 2, no sweep folder) and ends with the sweep's summary.
  exec "$PY" train.py -m lora=pretrained_r320,fresh_r64 hydra/callbacks=evaluate_and_compare "$@"
fi

# Several GPUs: each LoRA config in turn trains data parallel through the launcher (one process per GPU), into
# <sweep>/<lora>_<n> as a Hydra sweep would name it; then each run is evaluated through the same launcher (every
# rank generates whole batches, rank 0 merges and scores: the files one process would write); then the comparison.
read -r -a launcher <<< "${LAUNCHER:-$PY -m torch.distributed.run --standalone --nproc_per_node=$GPUS}"
n=0
runs=()
for lora in pretrained_r320 fresh_r64; do
  run_dir="$sweep_dir/${lora}_$n"
  echo "== train $lora on $GPUS GPUs: ${launcher[*]} -> $run_dir"
  "${launcher[@]}" train.py "lora=$lora" "$@" "hydra.run.dir=$run_dir"
  runs+=("$run_dir")
  n=$((n + 1))
done
for run_dir in "${runs[@]}"; do
  echo "== evaluate every checkpoint of $run_dir on $GPUS GPUs"
  "${launcher[@]}" evaluate.py "run_dir=$run_dir" checkpoint=all
done
echo "== compare"
"$PY" -m apa compare "$sweep_dir"
echo "== report"
"$PY" -m apa report "$sweep_dir"
