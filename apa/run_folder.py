"""The run-folder contract other tools rely on (see docs/architecture.md), and the guard against overwriting it.

    .hydra/  training_config.json  parameters.txt  checkpoint-epoch-<N>/  final_model/  logs/  train.log

Light on purpose (no torch): evaluation and comparison read run folders without importing the training stack.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

EPOCH_CHECKPOINT = "checkpoint-epoch-{}"
STEP_CHECKPOINT = "checkpoint-step-{}"  # saved mid-epoch when a SIGTERM/SIGINT stops training
FINAL_MODEL = "final_model"


class RunFolderError(RuntimeError):
    """The run folder already holds results; the message names both ways forward."""


def epoch_checkpoints(run_dir: Path) -> list[Path]:
    """Complete epoch checkpoints, oldest first (a folder only gets this name once fully written)."""
    found = [p for p in run_dir.glob("checkpoint-epoch-*") if p.name.rsplit("-", 1)[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.rsplit("-", 1)[-1]))


def resumable_checkpoints(run_dir: Path) -> list[Path]:
    """Complete epoch and interruption checkpoints, oldest first by the global step they were saved at."""
    found = [p for p in [*run_dir.glob("checkpoint-epoch-*"), *run_dir.glob("checkpoint-step-*")]
             if (p / "trainer_state.json").is_file()]
    return sorted(found, key=lambda p: json.loads((p / "trainer_state.json").read_text())["global_step"])


def check_run_dir(run_dir: Path, resume: bool) -> Path | None:
    """Refuse to train over earlier results unless resuming; return the checkpoint to resume from, if any."""
    done = resumable_checkpoints(run_dir) + ([run_dir / FINAL_MODEL] if (run_dir / FINAL_MODEL).exists() else [])
    if resume:
        if (run_dir / FINAL_MODEL).exists():
            raise RunFolderError(f"{run_dir} already holds a finished run ({FINAL_MODEL}/): nothing to resume")
        checkpoints = resumable_checkpoints(run_dir)
        if not checkpoints:
            log.warning("resume=true but %s has no complete checkpoint: starting from scratch", run_dir)
            return None
        log.info("Resuming from %s", checkpoints[-1])
        return checkpoints[-1]
    if done:
        raise RunFolderError(
            f"{run_dir} already holds results ({', '.join(p.name for p in done)}). Either continue it with "
            f"`resume=true hydra.run.dir={run_dir}`, or start a new run in another folder (leave hydra.run.dir unset "
            "for a fresh timestamped one)."
        )
    return None
