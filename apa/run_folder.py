"""The run-folder contract other tools rely on (see docs/architecture.md), and the rules that keep it true.

    .hydra/  training_config.json  parameters.txt  checkpoint-epoch-<N>/  final_model/  logs/  train.log

A run folder is changed only by a start that goes ahead: the folder check (no results unless resuming; a resume
must reproduce the run's own config) and an exclusive lock come before anything is written, Hydra's `.hydra/` record
included (Hydra's own writer is off: `hydra.output_subdir=null`). Every checkpoint carries a manifest of its files'
sizes and SHA-256 digests, so a damaged one is found before a resume trusts it.

Light on purpose (no torch): evaluation and comparison read run folders without importing the training stack.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from apa.errors import UserError

log = logging.getLogger(__name__)

EPOCH_CHECKPOINT = "checkpoint-epoch-{}"
STEP_CHECKPOINT = "checkpoint-step-{}"  # saved mid-epoch when a SIGTERM/SIGINT stops training
FINAL_MODEL = "final_model"
TRAINING_RECORD = "training_config.json"
MANIFEST = "apa_manifest.json"
LOCK = ".lock"
# Keys that may differ between a run's saved config and the command that resumes it.
RESUME_KEYS = frozenset({"resume", "extend", "allow_other_versions"})


class RunFolderError(UserError, RuntimeError):
    """The run folder cannot be used as asked; the message names the ways forward."""


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------


def epoch_checkpoints(run_dir: Path) -> list[Path]:
    """Complete epoch checkpoints, oldest first (a folder only gets this name once fully written)."""
    found = [p for p in run_dir.glob("checkpoint-epoch-*") if p.name.rsplit("-", 1)[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.rsplit("-", 1)[-1]))


def resumable_checkpoints(run_dir: Path) -> list[Path]:
    """Complete epoch and interruption checkpoints, oldest first by the global step they were saved at."""
    found = [p for p in [*run_dir.glob("checkpoint-epoch-*"), *run_dir.glob("checkpoint-step-*")]
             if (p / "trainer_state.json").is_file()]
    return sorted(found, key=lambda p: json.loads((p / "trainer_state.json").read_text())["global_step"])


def write_atomic(path: Path, text: str) -> None:
    """`text` into `path` whole or not at all: written to a temporary name beside it, then renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _file_digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_manifest(checkpoint: Path) -> None:
    """Record every file of a just-written checkpoint (size and SHA-256), before it is renamed into place."""
    files = {str(p.relative_to(checkpoint)): {"bytes": p.stat().st_size, "sha256": _file_digest(p)}
             for p in sorted(checkpoint.rglob("*")) if p.is_file() and p.name != MANIFEST}
    write_atomic(checkpoint / MANIFEST, json.dumps(files, indent=1))


def manifest_problems(checkpoint: Path) -> list[str]:
    """What differs between a checkpoint and its manifest (empty: intact). Checkpoints written before manifests
    existed have none and are trusted as before."""
    manifest = checkpoint / MANIFEST
    if not manifest.is_file():
        return []
    try:
        files = json.loads(manifest.read_text())
    except ValueError:
        return [f"{MANIFEST} is not valid JSON"]
    problems = []
    for name, expected in files.items():
        path = checkpoint / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif path.stat().st_size != expected["bytes"]:
            problems.append(f"{name} has {path.stat().st_size} bytes, {expected['bytes']} were saved")
        elif _file_digest(path) != expected["sha256"]:
            problems.append(f"{name} differs from what was saved (SHA-256)")
    return problems


def newest_intact_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint whose files match its manifest; damaged newer ones are named in the log and skipped."""
    for checkpoint in reversed(resumable_checkpoints(run_dir)):
        problems = manifest_problems(checkpoint)
        if not problems:
            return checkpoint
        log.warning("checkpoint %s is damaged (%s): skipping it, resuming from the one before", checkpoint,
                    "; ".join(problems[:3]))
    return None


# ---------------------------------------------------------------------------------------------------------------
# The folder check and the resume check
# ---------------------------------------------------------------------------------------------------------------


def _results(run_dir: Path) -> list[Path]:
    return resumable_checkpoints(run_dir) + ([run_dir / FINAL_MODEL] if (run_dir / FINAL_MODEL).exists() else [])


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): node}


def config_differences(saved: dict, requested: dict, ignore: frozenset[str] = RESUME_KEYS) -> list[str]:
    """`key: saved -> requested` for every resolved value that differs (dotted keys, sorted)."""
    old, new = _flatten(saved), _flatten(requested)
    # keys the saved run lacks are options added to the project after it started: they cannot have been used
    keys = sorted(old.keys() - ignore)
    missing = object()
    return [f"{k}: {old[k]!r} -> {new.get(k, '(unset)')!r}" for k in keys if new.get(k, missing) != old[k]]


def resolved_config(run_dir: Path):
    """The config a run trained with, resolved (training_config.json), as a DictConfig; None if `run_dir` holds no
    run. (`.hydra/config.yaml` is Hydra's unresolved form: its interpolations would resolve anew on reading.)"""
    from omegaconf import OmegaConf

    record = saved_record(run_dir)
    return None if record is None else OmegaConf.create(record["config"])


def saved_record(run_dir: Path) -> dict | None:
    path = run_dir / TRAINING_RECORD
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def check_run_dir(run_dir: Path, resume: bool, requested: dict | None = None, extend: bool = False,
                  announce: bool = True, allow_other_versions: bool = False) -> Path | None:
    """Refuse what would make the folder say something other than what ran; return the checkpoint to resume from.

    Without `resume`: the folder must hold no results and no other run's record. With `resume`: the folder must
    hold a run whose resolved config equals `requested` (differences are listed); a finished run continues only
    with `extend` and more epochs (`trainer.num_train_epochs`); the libraries that change numbers must be at the
    versions the run last ran under, unless `allow_other_versions` (the differences are logged either way).
    """
    results = _results(run_dir)
    record = saved_record(run_dir)
    if not resume:
        if results or record is not None:
            found = ", ".join(p.name for p in results) or TRAINING_RECORD
            raise RunFolderError(
                f"{run_dir} already holds a run ({found}). Either continue it with `resume=true "
                f"hydra.run.dir={run_dir}` (its own overrides are reused), or start a new run in another folder "
                "(leave hydra.run.dir unset for a fresh timestamped one)")
        return None
    if record is None:
        raise RunFolderError(f"resume=true but {run_dir} holds no run ({TRAINING_RECORD} missing): check "
                             "hydra.run.dir, or drop resume=true to start a new run")
    if requested is not None:
        differences = config_differences(record["config"], requested)
        epochs_only = [d for d in differences if not d.startswith("trainer.num_train_epochs:")]
        if epochs_only or (differences and not extend):
            hint = (" To train a finished run for more epochs, add `extend=true trainer.num_train_epochs=<N>`."
                    if not epochs_only else "")
            raise RunFolderError(
                f"resume=true: this command differs from the run in {run_dir}: {'; '.join(differences)}. Resume "
                "with the run's own settings (`resume=true hydra.run.dir=<run>` alone reuses them), or start a new "
                f"run for different ones.{hint}")
        if differences:  # extend with another epoch count
            saved_epochs = record["config"]["trainer"]["num_train_epochs"]
            if requested["trainer"]["num_train_epochs"] <= saved_epochs:
                raise RunFolderError(f"extend=true needs more epochs than the run's {saved_epochs}: set "
                                     f"trainer.num_train_epochs to at least {saved_epochs + 1}")
    _check_versions(record, allow_other_versions)
    if (run_dir / FINAL_MODEL).exists() and not extend:
        raise RunFolderError(f"{run_dir} already holds a finished run ({FINAL_MODEL}/): nothing to resume. To "
                             "train it for more epochs: `resume=true extend=true trainer.num_train_epochs=<N>`")
    if not announce:  # a pre-check (train.py, before the heavy imports): the checkpoint is chosen later
        return None
    checkpoint = newest_intact_checkpoint(run_dir)
    if checkpoint is None:
        log.warning("resume=true but %s has no complete checkpoint: starting from scratch with the run's config",
                    run_dir)
        return None
    log.info("Resuming from %s", checkpoint)
    return checkpoint


def _check_versions(record: dict, allowed: bool) -> None:
    """The run's library versions (those of its last resume, if any) against this process's."""
    from apa.versions import ALLOW_OPTION, library_versions, version_differences

    last = next((r["library_versions"] for r in reversed(record.get("resumes") or []) if r.get("library_versions")),
                record.get("library_versions"))
    differences = version_differences(last, library_versions())
    if not differences:
        return
    if not allowed:
        raise RunFolderError(
            f"resume=true: this environment's libraries differ from those the run trained with: "
            f"{'; '.join(differences)}. The resumed steps would not be the same computation. Install the run's "
            f"versions (its training_config.json lists them; the lock: requirements/lock-linux-py311.txt), or add "
            f"`{ALLOW_OPTION}` to continue anyway (each resume's versions are recorded)")
    log.warning("resume under other library versions (%s): %s", ALLOW_OPTION, "; ".join(differences))


# ---------------------------------------------------------------------------------------------------------------
# The lock
# ---------------------------------------------------------------------------------------------------------------


class RunLock:
    """An exclusive lock on a folder (`<folder>/.lock`, fcntl): one training or evaluation at a time.

    The kernel releases it when its process dies, however it dies; a lock file left behind by a dead process is
    taken over with a log line. The file holds the holder's PID, host and start time, for the refusal message.
    """

    def __init__(self, folder: Path, purpose: str):
        self.path = Path(folder) / LOCK
        self.purpose = purpose
        self._fd: int | None = None

    def _holder(self) -> str:
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return "another process"
        return (f"{info.get('purpose', 'a process')} (PID {info.get('pid', '?')} on {info.get('host', '?')}, "
                f"since {info.get('since', '?')})")

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunFolderError(f"{self.path.parent} is in use by {self._holder()}: wait for it to finish, or "
                                     "use another folder") from None
            try:  # the holder before us may have removed the file between our open and our lock: try again
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        stale = os.read(fd, 4096).decode(errors="replace").strip()
        if stale:
            log.warning("taking over the lock on %s left by %s, which is no longer running", self.path.parent,
                        self._describe(stale))
        info = {"purpose": self.purpose, "pid": os.getpid(), "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def holder_if_held(self) -> str | None:
        """Who holds this lock now (another process), or None; takes and changes nothing."""
        if not self.path.exists():
            return None
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return self._holder()
        finally:
            os.close(fd)  # closing drops our shared lock
        return None

    @staticmethod
    def _describe(text: str) -> str:
        try:
            info = json.loads(text)
            return f"{info.get('purpose')} (PID {info.get('pid')} on {info.get('host')})"
        except ValueError:
            return "an unknown process"

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ---------------------------------------------------------------------------------------------------------------
# Hydra's record, written by us once the start goes ahead
# ---------------------------------------------------------------------------------------------------------------


def write_hydra_record(run_dir: Path, files: dict[str, str]) -> None:
    """`.hydra/<name>` for each (name, YAML text), written to a temporary folder and renamed into place."""
    target = run_dir / ".hydra"
    tmp = run_dir / ".hydra.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, text in files.items():
        (tmp / name).write_text(text)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
