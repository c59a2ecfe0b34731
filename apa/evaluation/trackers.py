"""Where a run's evaluation metrics go besides metrics.json: the trackers its trainer reported to (`trainer.report_to`
in the run record), so that the test metrics of each evaluated checkpoint sit beside the training loss, at the
optimizer step the checkpoint was saved at.

- **tensorboard**: the run's TensorBoard log (<run>/logs, where the trainer writes train/loss). Each evaluation folder
  (<run>/eval, or <run>/eval-<data>-<digest>) has one event file of its own there, `events.out.tfevents.*.<prefix>`,
  holding every checkpoint evaluated into that folder (read back from their metrics.json) at its step: the headline
  metrics as `<prefix>/<metric>`, every other number of metrics.json (counts, p values, FAR/FRR/DER, ...) as
  `<prefix>_detail/<metric>`. `<prefix>` is `test` for the run's own test split (the trainer's own `eval/` tags are
  the validation loss), else the folder's name. The file is rewritten whole after each evaluation (in a temporary
  folder beside logs/, then renamed into it) and the file it replaces is removed, so re-evaluating a checkpoint never
  leaves a second point at its step; a TensorBoard already running replaces the old points too, as it does for a
  resumed training (a series that steps back drops its points from that step on).
- **wandb**: the W&B run the training logged to (its id, recorded by `finish_wandb_run` in the run record), resumed;
  without one, a new run named after the run folder. The checkpoints evaluated now are logged with
  `train/global_step` as their x-axis, as the trainer logs its own. (W&B keeps every logged row: re-evaluating a
  checkpoint adds a row at the same step.) `WANDB_MODE=disabled` turns it off.
- Anything else TrainingArguments knows (mlflow, comet_ml, ...) gets one log line: the metrics stay in metrics.json.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

from apa.errors import UserError
from apa.run_folder import (
    METRICS,
    TENSORBOARD_DIR,
    checkpoint_step,
    evaluations,
    read_fingerprint,
    read_metrics,
    read_record,
)

log = logging.getLogger(__name__)

SUPPORTED = ("tensorboard", "wandb")
WANDB_EXTRA = "pip install -e '.[wandb]'"
OWN_TEST_PREFIX = "test"
# the x-axis of the trainer's own W&B charts (transformers' WandbCallback), used for the evaluation's too
WANDB_STEP = "train/global_step"
# metrics.json keys shown first, as `<prefix>/<key>`; the other numbers go to `<prefix>_detail/<key>`
HEADLINE = ("pcc_accuracy", "pcc_fluency", "pcc_prosodic", "pcc_total", "wer", "per", "mdd_precision", "mdd_recall",
            "mdd_f1", "parse_rate_apa", "parse_rate_mdd")


class Point(NamedTuple):
    step: int
    checkpoint: str
    metrics: dict


def trackers(report_to) -> list[str]:
    """`trainer.report_to` as TrainingArguments reads it: a name or a list of names; "all": every integration
    installed (of those evaluation supports); "none", empty or null: none."""
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    if "none" in names:
        return []
    if "all" in names:
        return [name for name in SUPPORTED if importlib.util.find_spec(name) is not None]
    return [str(name) for name in names]


def wandb_disabled() -> bool:
    return os.environ.get("WANDB_MODE", "").lower() == "disabled"


def check_trackers(report_to, where: str, otherwise: str, may_disable: bool = False) -> None:
    """Before anything loads: W&B asked for by name but not installed is one error naming the extra that brings it
    (`otherwise`: the other way forward; `may_disable`: WANDB_MODE=disabled is that way, as for an evaluation)."""
    if may_disable and wandb_disabled():
        return
    if "wandb" in trackers(report_to) and importlib.util.find_spec("wandb") is None:
        names = list(report_to) if not isinstance(report_to, str) else [report_to]
        raise UserError(f"{where} reports to wandb (trainer.report_to={names}) but wandb is not installed: "
                        f"`{WANDB_EXTRA}`, {otherwise}")


def scalars(metrics: dict, prefix: str) -> dict[str, float]:
    """The numbers of a metrics.json as tracker tags; undefined ones (null) are left out."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        out[f"{prefix if key in HEADLINE else prefix + '_detail'}/{key}"] = float(value)
    return out


def saved_at(run_dir: Path, eval_dir: Path) -> int | None:
    """The optimizer step of the checkpoint evaluated in `eval_dir`: as its fingerprint recorded it, else as the
    checkpoint says (None when neither can)."""
    step = (read_fingerprint(eval_dir) or {}).get("global_step")
    return step if step is not None else checkpoint_step(run_dir, eval_dir.name)


def evaluation_points(run_dir: Path, eval_root: Path) -> list[Point]:
    """Every checkpoint evaluated into `eval_root` at the step it was saved at, one per step, by step: final_model
    saved where the last epoch ended holds that epoch's weights and adds no second point."""
    points: dict[int, Point] = {}
    for folder in evaluations(run_dir, eval_root.name):  # epochs by number, final_model last
        step = saved_at(run_dir, folder)
        if step is None:
            log.warning("%s: the step its checkpoint was saved at is unknown (no global_step in its fingerprint, and "
                        "the checkpoint is gone): left out of the trackers", folder)
            continue
        points.setdefault(step, Point(step, folder.name, read_metrics(folder)))
    return sorted(points.values())


def write_tensorboard(run_dir: Path, eval_root: Path, prefix: str) -> Path:
    """<run>/logs/events.out.tfevents.*.<prefix>: every point of `eval_root`, replacing the file written before."""
    from torch.utils.tensorboard import SummaryWriter

    logs = run_dir / TENSORBOARD_DIR
    suffix = f".{prefix}"
    replaced = sorted(logs.glob(f"events.out.tfevents.*{suffix}"))
    points = evaluation_points(run_dir, eval_root)
    with tempfile.TemporaryDirectory(dir=run_dir, prefix=".tensorboard-") as tmp:
        writer = SummaryWriter(tmp, filename_suffix=suffix)
        for point in points:
            for tag, value in scalars(point.metrics, prefix).items():
                writer.add_scalar(tag, value, point.step)
        writer.close()
        (written,) = Path(tmp).iterdir()
        logs.mkdir(exist_ok=True)
        target = logs / written.name
        os.replace(written, target)
    for old in replaced:
        if old != target:
            old.unlink()
    log.info("TensorBoard: %s/ at steps %s in %s", prefix, [p.step for p in points], target)
    return target


def log_wandb(run_dir: Path, record: dict, evaluated: list[str], eval_root: Path, prefix: str) -> None:
    """The checkpoints evaluated now, into the training's W&B run (resumed), or a run of their own."""
    if wandb_disabled():
        log.info("W&B is off (WANDB_MODE=disabled): %s's metrics are not sent to W&B", run_dir)
        return
    import wandb

    steps = {saved_at(run_dir, eval_root / name) for name in evaluated}
    trained = record.get("wandb_run") or {}
    settings = {"project": trained.get("project") or os.environ.get("WANDB_PROJECT", "huggingface")}
    if trained.get("id"):
        settings.update(id=trained["id"], entity=trained.get("entity") or None, resume="allow")
    else:
        settings.update(name=f"{run_dir.name}-evaluation", job_type="evaluation")
    run = wandb.init(reinit="create_new", **settings)  # never takes over (or ends) a run this process has open
    try:
        run.define_metric(WANDB_STEP)
        run.define_metric(f"{prefix}*", step_metric=WANDB_STEP)
        for point in evaluation_points(run_dir, eval_root):
            if point.step in steps:
                run.log({**scalars(point.metrics, prefix), WANDB_STEP: point.step})
        log.info("W&B: %s/ at steps %s in run %s (project %s)", prefix, sorted(s for s in steps if s is not None),
                 run.id, run.project)
    finally:
        run.finish()


def log_evaluation(run_dir: Path, eval_root: Path, evaluated: list[str], own: bool) -> None:
    """After an evaluation of `run_dir` into `eval_root` (rank 0): its metrics to the trackers the run reported to."""
    record = read_record(run_dir) or {}
    report_to = ((record.get("config") or {}).get("trainer") or {}).get("report_to")
    prefix = OWN_TEST_PREFIX if own else eval_root.name
    for name in trackers(report_to):
        if name == "tensorboard":
            write_tensorboard(run_dir, eval_root, prefix)
        elif name == "wandb":
            log_wandb(run_dir, record, evaluated, eval_root, prefix)
        else:
            log.info("trainer.report_to lists %s: evaluation reports only to %s; %s's metrics are in %s/*/%s", name,
                     " and ".join(SUPPORTED), run_dir, eval_root, METRICS)


def finish_wandb_run(report_to) -> dict | None:
    """After training: the W&B run the trainer logged to, for the run record ({"id", "project", "entity", "name"}:
    evaluation resumes it), finished so that the next job of a sweep in this process starts its own (transformers'
    WandbCallback leaves it open). None without one."""
    wandb = sys.modules.get("wandb") if "wandb" in trackers(report_to) else None
    run = getattr(wandb, "run", None)
    if run is None:
        return None
    info = {"id": run.id, "project": run.project, "entity": run.entity or None, "name": run.name}
    run.finish()
    return info
