"""The run-folder contract: every name in a run folder, and the one reader of it.

    <run>/
      .hydra/                  Hydra's record of the command (written once the start goes ahead)
      training_config.json     the run record: format version, resolved config, dataset, library versions, ...
      parameters.txt  train.log  README.md (model card)
      logs/                    TensorBoard: the trainer's event files, and one per evaluation folder with its metrics
                               at each checkpoint's step (events.out.tfevents.*.test; apa.evaluation.trackers)
      checkpoint-epoch-<N>/    complete epoch checkpoints (renamed into place, with apa_manifest.json)
      checkpoint-step-<N>/     after an interruption mid-epoch
      final_model/             the adapter, tokenizer, the base checkpoint's processor files and README.md (its card)
      eval/<checkpoint>/       predictions.jsonl, metrics.json, fingerprint.json, test_split.json, train_means.json
                               (predictions.rank-<R>.jsonl: one rank's answers while several generate; merged
                               into predictions.jsonl, then removed)
      eval-<data>-<digest>/    evaluations on other data or prompts
      .lock                    while a training or evaluation holds the folder

No torch here: evaluation and reporting read run folders without importing the training stack.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path

from apa.errors import UserError

log = logging.getLogger(__name__)

# The format of training_config.json and of the folder around it. A run folder of another format is refused in one
# line, naming the version that wrote it: no reader carries compatibility branches for older layouts.
FORMAT_VERSION = 2
TRAINING_RECORD = "training_config.json"
EPOCH_CHECKPOINT = "checkpoint-epoch-{}"
STEP_CHECKPOINT = "checkpoint-step-{}"  # saved mid-epoch when a SIGTERM/SIGINT stops training
FINAL_MODEL = "final_model"
MODEL_CARD = "README.md"  # this project's card, in the run folder and in final_model/ (apa.reporting.model_card)
MANIFEST = "apa_manifest.json"
LOCK = ".lock"
EVAL_DIR = "eval"
PREDICTIONS = "predictions.jsonl"
# one rank's share of a data-parallel evaluation (apa.evaluation.predictions), resumable like predictions.jsonl;
# rank 0 merges the shards into predictions.jsonl (in the single-process order) and removes them
PREDICTION_SHARD = "predictions.rank-{}.jsonl"
METRICS = "metrics.json"
FINGERPRINT = "fingerprint.json"
SPLIT_FILE = "test_split.json"  # what the test split held (utterances, phones, skips)
TRAIN_MEANS = "train_means.json"  # what an unparsed APA answer is imputed with
EVAL_SETTINGS = "eval_settings.json"  # the untrained baseline's settings
TRAINER_STATE = "trainer_state.json"  # in every checkpoint: the trainer's step and log
TENSORBOARD_DIR = "logs"  # the run's TensorBoard log (trainer.report_to: tensorboard)


class RunFolderError(UserError, RuntimeError):
    """The run folder cannot be used as asked; the message names the ways forward."""


def write_atomic(path: Path, text: str) -> None:
    """`text` into `path` whole or not at all: written to a temporary name beside it, then renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, payload, indent: int = 2) -> None:
    write_atomic(path, json.dumps(payload, indent=indent, default=str) + "\n")


# ---------------------------------------------------------------------------------------------------------------
# The run record
# ---------------------------------------------------------------------------------------------------------------


def read_file(path: Path, fix: str, parse=json.loads, expect: type = dict):
    """A file this project wrote, read back: its text parsed by `parse` (JSON by default) and of type `expect`. Any
    decode error, a folder or unreadable file in its place, or another type of content is a RunFolderError in one
    line naming the file and `fix` (what to do: delete the damaged checkpoint, re-run the evaluation, ...)."""
    try:
        value = parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as e:  # JSONDecodeError and YAML's errors included
        raise RunFolderError(f"{path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:120]}): it is "
                             f"damaged or was not written by this project. {fix}") from e
    if not isinstance(value, expect):
        raise RunFolderError(f"{path} holds a {type(value).__name__}, not the {expect.__name__} this project writes "
                             f"there: it is damaged. {fix}")
    return value


def read_yaml(path: Path, fix: str, expect: type = list):
    """`read_file` for a YAML file (Hydra's .hydra/ record)."""
    import yaml

    def parse(text: str):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(str(e)) from e

    return read_file(path, fix, parse, expect)


RECORD_FIX = ("Restore it from a backup; without it the folder is not a usable run (train a new one, or delete the "
              "folder)")


def read_record(run_dir: Path) -> dict | None:
    """The run's training_config.json, or None when the folder holds no run; a record of another format is refused."""
    path = Path(run_dir) / TRAINING_RECORD
    if not path.exists():
        return None
    record = read_file(path, RECORD_FIX)
    found = record.get("format_version", 1)
    if isinstance(found, bool) or not isinstance(found, int):
        raise RunFolderError(f"{path} holds format_version={found!r}, not the integer this project writes: it is "
                             f"damaged. {RECORD_FIX}")
    if found != FORMAT_VERSION:
        wrote = (record.get("library_versions") or {}).get("apa", "an older version")
        raise RunFolderError(
            f"{run_dir} is a run folder of format {found}, written by apa {wrote}; this version reads format "
            f"{FORMAT_VERSION}. Use the version that wrote it (its git commit: {record.get('git_commit')}), or train "
            "the run again")
    return record


saved_record = read_record  # the name the folder checks use


def write_record(run_dir: Path, record: dict) -> None:
    write_json(Path(run_dir) / TRAINING_RECORD, {**record, "format_version": FORMAT_VERSION})


def resolved_config(run_dir: Path):
    """The config a run trained with, resolved, as a DictConfig; None if `run_dir` holds no run. (`.hydra/config.yaml`
    is Hydra's unresolved form: its interpolations would resolve anew on reading.)"""
    from omegaconf import OmegaConf

    record = read_record(run_dir)
    return None if record is None else OmegaConf.create(record["config"])


def find_runs(paths: list[Path]) -> list[Path]:
    """Run folders: each path that is one, else the runs directly inside it (a sweep folder); a run reached twice
    (given twice, or as itself and inside its sweep) counts once."""
    runs: list[Path] = []
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:  # a typo among several paths would otherwise leave its runs out without a word
        raise RunFolderError(f"{', '.join(missing)}: no such folder; give run folders or folders of runs (a sweep)")
    for path in map(Path, paths):
        if (path / TRAINING_RECORD).exists():
            found = [path]
        else:
            found = sorted(p.parent for p in path.glob(f"*/{TRAINING_RECORD}"))
        runs += [run for run in found if run.resolve() not in {r.resolve() for r in runs}]
    if not runs:
        raise RunFolderError(f"no run folders (with {TRAINING_RECORD}) in {', '.join(map(str, paths))}")
    return runs


def loss_history(run_dir: Path) -> tuple[list[int], list[float]]:
    """(optimizer steps, training losses): the run's own record of its loss (`loss_history`, written as training
    ends from the trainer's log), the one source of every loss curve."""
    record = read_record(run_dir) or {}
    points = record.get("loss_history") or []
    return [p[0] for p in points], [p[1] for p in points]


def validation_loss_history(run_dir: Path) -> tuple[list[int], list[float]]:
    """(optimizer steps, validation losses) of a run that held speakers out (data.validation_fraction > 0: a loss per
    epoch), from its newest checkpoint's trainer state (the run record does not carry them); empty lists otherwise."""
    checkpoints = resumable_checkpoints(Path(run_dir))
    if not checkpoints:
        return [], []
    history = read_file(checkpoints[-1] / TRAINER_STATE, "").get("log_history") or []
    points = [(e["step"], e["eval_loss"]) for e in history if isinstance(e, dict) and "eval_loss" in e and "step" in e]
    return [p[0] for p in points], [p[1] for p in points]


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints and their evaluations
# ---------------------------------------------------------------------------------------------------------------


def epoch_of(checkpoint: str) -> str:
    """'checkpoint-epoch-2' -> '2'; 'final_model' (or anything else) -> 'final'."""
    return checkpoint.rsplit("-", 1)[-1] if checkpoint.startswith("checkpoint-epoch-") else "final"


def checkpoint_order(name: str) -> float:
    """Sort key: epochs by number (10 after 2), final_model last."""
    epoch = epoch_of(name)
    return float(epoch) if epoch.isdigit() else math.inf


def epoch_checkpoints(run_dir: Path) -> list[Path]:
    """Complete epoch checkpoints, oldest first (a folder only gets this name once fully written)."""
    found = [p for p in Path(run_dir).glob("checkpoint-epoch-*") if p.name.rsplit("-", 1)[-1].isdigit()]
    return sorted(found, key=lambda p: checkpoint_order(p.name))


def resumable_checkpoints(run_dir: Path) -> list[Path]:
    """Complete epoch and interruption checkpoints, oldest first by the global step they were saved at."""
    steps = {p: _global_step(p) for p in [*Path(run_dir).glob("checkpoint-epoch-*"), *Path(run_dir).glob(
        "checkpoint-step-*")] if (p / TRAINER_STATE).is_file()}
    return sorted((p for p, step in steps.items() if step is not None), key=steps.__getitem__)


def _global_step(checkpoint: Path) -> int | None:
    """The step a checkpoint was saved at; None (named in the log) where its trainer state cannot be read: such a
    folder is not a checkpoint to resume from."""
    try:
        step = read_file(checkpoint / TRAINER_STATE, "").get("global_step")
    except RunFolderError:
        step = None
    if not isinstance(step, int) or isinstance(step, bool):
        log.warning("%s: its %s is damaged (no readable global_step): not a checkpoint to resume from; delete it",
                    checkpoint, TRAINER_STATE)
        return None
    return step


def checkpoint_step(run_dir: Path, checkpoint: str) -> int | None:
    """The optimizer step `<run>/<checkpoint>` was saved at: its trainer_state.json's, or for final_model the run
    record's `global_steps`; None where the folder or its record is gone or unreadable."""
    if checkpoint == FINAL_MODEL:
        step = (read_record(run_dir) or {}).get("global_steps")
        return step if isinstance(step, int) and not isinstance(step, bool) else None
    folder = Path(run_dir) / checkpoint
    return _global_step(folder) if (folder / TRAINER_STATE).is_file() else None


def evaluations(run_dir: Path, root: str = EVAL_DIR) -> list[Path]:
    """The evaluated checkpoints' folders under `<run>/<root>/` (those with metrics.json), in checkpoint order."""
    found = [p.parent for p in (Path(run_dir) / root).glob(f"*/{METRICS}")]
    return sorted(found, key=lambda p: (checkpoint_order(p.name), p.name))


NUMERIC_METRICS = ("pcc_", "wer", "per", "mdd_", "n_", "parse_rate", "far", "frr", "der", "phone_")


def read_metrics(eval_dir: Path) -> dict:
    """An evaluation's metrics.json; a figure that is not a number (or null) is refused like undecodable JSON."""
    fix = f"Re-score it: `python evaluate.py predictions={Path(eval_dir) / PREDICTIONS}` rewrites it"
    metrics = read_file(Path(eval_dir) / METRICS, fix)
    wrong = [k for k, v in metrics.items() if k.startswith(NUMERIC_METRICS)
             and (isinstance(v, bool) or not (v is None or isinstance(v, (int, float))))]
    if wrong:
        raise RunFolderError(f"{Path(eval_dir) / METRICS} holds {', '.join(f'{k}={metrics[k]!r}' for k in wrong[:3])}"
                             f", not numbers: it is damaged. {fix}")
    return metrics


def read_train_means(path: Path) -> dict:
    """train_means.json: each APA aspect's training-split mean (what an unparsed answer is imputed with)."""
    from apa.data.records import APA_ASPECTS

    fix = "Delete it and re-run the evaluation (it is written from the training split)"
    means = read_file(path, fix)
    wrong = [a for a in APA_ASPECTS if isinstance(means.get(a), bool) or not isinstance(means.get(a), (int, float))]
    if wrong:
        raise RunFolderError(f"{path} has no number for {', '.join(wrong)}: it is damaged. {fix}")
    return means


def prediction_shards(eval_dir: Path) -> list[Path]:
    """The per-rank prediction files in an evaluation folder, by rank (those of any earlier world size too)."""
    found = [p for p in Path(eval_dir).glob(PREDICTION_SHARD.format("*"))
             if p.name[len("predictions.rank-"):-len(".jsonl")].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len("predictions.rank-"):-len(".jsonl")]))


def read_fingerprint(eval_dir: Path) -> dict | None:
    path = Path(eval_dir) / FINGERPRINT
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None


def remove_evaluation(run_dir: Path, checkpoint: str) -> bool:
    """Delete `<run>/eval/<checkpoint>/` (it described weights that are gone, e.g. a final model replaced by
    extend=true); True if there was one."""
    stale = Path(run_dir) / EVAL_DIR / checkpoint
    if not stale.exists():
        return False
    shutil.rmtree(stale)
    return True
