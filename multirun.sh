#!/usr/bin/env bash
# Sweep both LoRA configs (or the values of your own lora=), evaluate every checkpoint of every job, then compare
# them (comparison.md/csv, PNGs, and report.html: the comparison with curves and an utterance browser, opened offline
# in any browser).
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
own="pretrained_r320,fresh_r64"  # this script's sweep; a lora= among the arguments replaces it (as Hydra reads them)
loras="$own"
mine=("lora=$own")  # given to train.py unless a lora= of yours replaces it (train.py warns of a key given twice)
for arg in "$@"; do
  case "$arg" in
    hydra.sweep.dir=*) sweep_dir="${arg#hydra.sweep.dir=}" ;;
    lora=*) loras="${arg#lora=}"; mine=() ;;
  esac
done
if [ "$loras" = "$own" ]; then what="both LoRA configs (lora=$own)"; else
  what="lora=$loras (your lora=, in place of this script's lora=$own)"; fi
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
  echo "== train $what, evaluate every checkpoint of each job, compare: $sweep_dir"
  # One process: the evaluate_and_compare callback (conf/hydra/callbacks/) runs evaluate.py's and apa.reporting.compare's
  # code after each job and after the sweep, so the libraries are imported once. It checks the model and data sources
  # before the first job (no hub: one error line, exit 2, no sweep folder) and ends with the sweep's summary.
  # (jobs that would train the same config, a value given twice, are refused there before the first one)
  exec "$PY" train.py -m ${mine[@]+"${mine[@]}"} hydra/callbacks=evaluate_and_compare "$@"
fi

# Several GPUs: each LoRA config in turn (this script's two, or the values of your lora=) trains data parallel
# through the launcher (one process per GPU), into <sweep>/<lora>_<n> as a Hydra sweep would name it; then each run
# is evaluated through the same launcher (every rank generates whole batches, rank 0 merges and scores: the files one
# process would write); then the comparison. A value given twice would train one config twice: refused, as a sweep
# refuses it (apa.callbacks.SweepSummary).
IFS=, read -r -a lora_list <<< "$loras"
given=" "
for lora in "${lora_list[@]}"; do
  case "$given" in *" $lora "*)
    echo "error: lora=$lora is given twice (lora=$loras): two jobs would train the same config with the same seed," \
      "the second a repeat of the first, not a replicate: give each value once" >&2
    exit 2 ;;
  esac
  given+="$lora "
done
args=()
for arg in "$@"; do case "$arg" in lora=*) ;; *) args+=("$arg") ;; esac; done
echo "== train $what on $GPUS GPUs each, evaluate every checkpoint of each job, compare: $sweep_dir"
read -r -a launcher <<< "${LAUNCHER:-$PY -m torch.distributed.run --standalone --nproc_per_node=$GPUS}"
n=0
runs=()
for lora in "${lora_list[@]}"; do
  run_dir="$sweep_dir/${lora}_$n"
  echo "== train $lora on $GPUS GPUs: ${launcher[*]} -> $run_dir"
  "${launcher[@]}" train.py "lora=$lora" ${args[@]+"${args[@]}"} "hydra.run.dir=$run_dir"
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
