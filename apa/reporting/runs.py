"""What reporting reads of run folders, through apa.run_folder: one row per evaluated checkpoint (`collect`), the test
set each was scored on, the answers themselves (a torn last line left out), and a label per run."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from apa.data.release import describe as describe_data
from apa.errors import override_arg
from apa.run_folder import PREDICTIONS, epoch_of, evaluations, read_fingerprint, read_metrics, read_record

log = logging.getLogger(__name__)

NOT_EVALUATED = "(not evaluated)"  # the checkpoint of a run's one row while none of its checkpoints is evaluated


def random_weights(model: dict) -> bool:
    """Whether a run's base model had random weights (its `config.model`): a generated miniature (`model=tiny`,
    `tiny_released`) or the full-size architecture left random (`model=phi4mm_random`). Such a run checks the
    pipeline; its scores mean nothing."""
    return bool(model.get("tiny") or model.get("random"))


def run_identity(run: Path) -> dict:
    """What a run trained, from its record: its name, LoRA (name, r, alpha), base model (the checkpoint it loaded,
    its revision) and whether that base had random weights."""
    record = read_record(run)
    model, lora = record["config"]["model"], record["config"]["lora"]
    return {"run": run.name, "lora": lora["name"], "r": lora["r"], "alpha": lora["alpha"],
            "base": model.get("path") or record.get("model_path") or model.get("name"), "model": model.get("name"),
            "revision": model.get("revision"), "random_weights": random_weights(model)}


def read_answers(eval_dir: Path) -> list[dict]:
    """The records of an evaluation's predictions ([] if it has none); a torn line (evaluation stopped mid-write)
    is left out with a warning. (apa.evaluation's reader refuses such a file: it is about to be resumed.)"""
    path = Path(eval_dir) / PREDICTIONS
    records: list[dict] = []
    if not path.is_file():
        return records
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    log.warning("%s line %d is not JSON (an interrupted evaluation?): left out", path, n)
    return records


def evaluated_data(eval_dir: Path) -> dict | None:
    """The dataset an evaluation was scored on (its fingerprint's `data`: revision and label release)."""
    return (read_fingerprint(eval_dir) or {}).get("data")


def scored_set_digest(eval_dir: Path) -> str | None:
    """A short digest of what an evaluation was scored against: its answers' (id, task, reference) triples, and the
    dataset's revision and label release (two label releases are two test sets, even where their references agree);
    None without predictions."""
    if not (Path(eval_dir) / PREDICTIONS).is_file():
        return None
    data = evaluated_data(eval_dir) or {}
    triples = [json.dumps({k: data.get(k) for k in ("hub_id", "revision", "labels")}, sort_keys=True)]
    triples += [json.dumps([rec.get("id"), rec.get("task"), rec.get("reference")], sort_keys=True)
                for rec in read_answers(eval_dir)]
    return hashlib.sha256("\n".join(sorted(triples)).encode()).hexdigest()[:10]


def collect(run: Path) -> list[dict]:
    """One row per evaluated checkpoint of `run`, in checkpoint order: the run's name, LoRA, size, time and loss,
    then the checkpoint's metrics (or one row, checkpoint NOT_EVALUATED, when none is evaluated). `split`: the split
    eval/ scored (the run's own data.test_split: other data goes to eval-<data>-<digest>/), `training_split`: true
    where that is the split it trained on (experiment=overfit)."""
    record = read_record(run)
    model = record["config"].get("model", {})
    data = record["config"].get("data") or {}
    common = {
        "run": run.name,
        "lora": record["config"]["lora"]["name"],
        "trainable_params": record["parameters"]["trainable"],
        "train_seconds": record.get("train_seconds"),
        "final_train_loss": record.get("final_train_loss"),
        "random_weights": random_weights(model),
    }
    evaluated = evaluations(run)
    if not evaluated:
        return [{**common, "checkpoint": NOT_EVALUATED, "epoch": ""}]
    split = {"split": data.get("test_split"),
             "training_split": data.get("test_split") is not None and data.get("test_split") == data.get("train_split")}
    return [{**common, "checkpoint": e.name, "epoch": epoch_of(e.name), "test_set": scored_set_digest(e),
             "data": describe_data(evaluated_data(e)), **split, **_answers_missing(run, e), **read_metrics(e)}
            for e in evaluated]


def _answers_missing(run: Path, eval_dir: Path) -> dict:
    """{"answers_missing": <the missing file>} for an evaluation whose metrics.json stands without its answers
    (predictions.jsonl deleted or lost), with a warning naming the file; {} where they are there."""
    path = eval_dir / PREDICTIONS
    if path.is_file():
        return {}
    log.warning("%s is missing: the answers of %s %s are left out (utterance browser, scatter plot, paired "
                "differences) while its metrics row stays; evaluate it again to write them: python evaluate.py %s "
                "checkpoint=%s", path, run.name, eval_dir.name, override_arg("run_dir", run), eval_dir.name)
    return {"answers_missing": str(path)}


def run_labels(runs: list[Path]) -> dict[Path, str]:
    """Each run's folder name, or parent/name where two runs (from two sweeps) share a name."""
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.name] = counts.get(run.name, 0) + 1
    return {run: run.name if counts[run.name] == 1 else f"{run.parent.name}/{run.name}" for run in runs}
