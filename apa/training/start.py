"""The one start of a training: before anything is written, the config is checked, the folder locked and checked.
Light (no torch, no transformers): train.py refuses a bad start in seconds."""

from __future__ import annotations

import signal
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from apa.config import RunConfig, check_config
from apa.errors import Interrupted, override_arg
from apa.evaluation.trackers import check_trackers
from apa.run_folder import RunLock, check_run_dir, read_record, resumable_checkpoints
from apa.training.engine import training_engine


def start(cfg: DictConfig, run_dir: Path) -> tuple[RunLock | None, Path | None]:
    """Everything before a start writes anything, once: the config checked, the folder locked (rank 0: one training
    at a time), the folder check passed (no results unless resuming; a resume reproduces the run's own config and
    library versions). Returns (the lock, to release when done; the checkpoint to resume from, or None)."""
    from apa.distributed import rank

    check_config(cfg, RunConfig)
    training_engine(cfg)  # DeepSpeed asked for but missing, or a ZeRO stage this model cannot train
    check_trackers(OmegaConf.select(cfg, "trainer.report_to"), "the training", "or drop wandb from trainer.report_to")
    requested = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    lock = RunLock(run_dir, "training") if rank() == 0 else None
    if lock is not None:
        lock.acquire()
    try:
        resume_from = check_run_dir(run_dir, cfg.resume, requested, bool(cfg.get("extend")),
                                    allow_other_versions=bool(cfg.get("allow_other_versions")))
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return lock, resume_from


def stopped_before_training(run_dir: Path, signum: int) -> Interrupted:
    """The one line for a SIGTERM or Ctrl-C (`signum`) that stopped a start before its first optimizer step,
    once the start is cleaned up as a failed one (train.py: apa.run_folder.check.discard_failed_start): start again
    where no run record is left; continue with resume=true where the folder holds a run (a resume, or a start that
    had written its record)."""
    name = signal.Signals(signum).name
    if read_record(run_dir) is None:
        return Interrupted(f"stopped by {name} while starting, before the first training step: nothing was trained "
                           "and what the start wrote is removed. Start again with the same command", signum)
    saved = resumable_checkpoints(run_dir)
    kept = f"; its checkpoints are intact (newest: {saved[-1].name})" if saved else ""
    return Interrupted(f"stopped by {name} while starting, before the first training step: nothing was trained by "
                       f"this start{kept}. Continue with the same overrides plus "
                       f"`resume=true {override_arg('hydra.run.dir', run_dir)}`", signum)
