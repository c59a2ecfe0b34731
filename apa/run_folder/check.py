"""The folder check before a start: no results unless resuming, and a resume reproduces the run (its config, its
library versions), or says exactly how it differs."""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from apa.errors import override_arg
from apa.run_folder.layout import (
    FINAL_MODEL,
    TRAINING_RECORD,
    RunFolderError,
    read_record,
    resumable_checkpoints,
)
from apa.run_folder.manifest import newest_intact_checkpoint

log = logging.getLogger(__name__)

# Keys that may differ between a run's saved config and the command that resumes it.
RESUME_KEYS = frozenset({"resume", "extend", "allow_other_versions", "run_name"})  # none changes what trains


def _results(run_dir: Path) -> list[Path]:
    return resumable_checkpoints(run_dir) + ([run_dir / FINAL_MODEL] if (run_dir / FINAL_MODEL).exists() else [])


def flatten_config(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as {dotted key: value}; an empty mapping stays a value ({})."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten_config(value, f"{prefix}{key}."))
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): node}


def config_differences(saved: dict, requested: dict, ignore: frozenset[str] = RESUME_KEYS) -> list[str]:
    """`key: saved -> requested` for every resolved value that differs (dotted keys, sorted)."""
    old, new = flatten_config(saved), flatten_config(requested)
    keys = sorted((old.keys() | new.keys()) - ignore)
    missing = object()
    return [f"{k}: {old.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r}" for k in keys
            if new.get(k, missing) != old.get(k, missing)]


def check_run_dir(run_dir: Path, resume: bool, requested: dict | None = None, extend: bool = False,
                  allow_other_versions: bool = False) -> Path | None:
    """Refuse what would make the folder say something other than what ran; return the checkpoint to resume from.

    Without `resume`: the folder must hold no results and no other run's record. With `resume`: the folder must
    hold a run whose resolved config equals `requested` (differences are listed); a finished run continues only
    with `extend` and more epochs (`trainer.num_train_epochs`); the libraries that change numbers must be at the
    versions the run last ran under, unless `allow_other_versions` (the differences are logged either way).
    """
    results = _results(run_dir)
    record = read_record(run_dir)
    if results and record is None:  # neither a new run's folder nor a resumable one: say so the same way both times
        raise RunFolderError(
            f"{run_dir} holds checkpoints ({', '.join(p.name for p in results[:3])}) but no {TRAINING_RECORD} (the "
            "run record that says what they are): it can neither be resumed nor trained into. Restore the record, "
            "or train into a new folder (leave hydra.run.dir unset for a fresh timestamped one)")
    if not resume:
        foreign = foreign_entries(run_dir) if record is None and not results else []
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise RunFolderError(
                f"{run_dir} is not empty and holds no run of this project ({shown}): training would write its files "
                "among them. Train into a new or empty folder (leave hydra.run.dir unset for a fresh timestamped "
                "one)")
        if results or record is not None:
            found = ", ".join(p.name for p in results) or TRAINING_RECORD
            raise RunFolderError(
                f"{run_dir} already holds a run ({found}). Either continue it with `resume=true "
                f"{override_arg('hydra.run.dir', run_dir)}` (its own overrides are reused), or start a new run in "
                "another folder (another run_name=, or leave run_name and hydra.run.dir unset for a fresh timestamped "
                "one)")
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
    skipped: list[tuple[Path, list[str]]] = []
    checkpoint = newest_intact_checkpoint(run_dir, skipped)
    if checkpoint is None and (run_dir / FINAL_MODEL).exists():  # extend: nothing to continue from
        raise RunFolderError(
            f"extend=true continues a finished run from its last intact epoch checkpoint, and {run_dir} has none "
            f"(deleted, or damaged: see the log). Nothing was changed; its {FINAL_MODEL}/ stays. Train a new run with "
            "the epochs you want instead")
    if checkpoint is None and skipped:  # starting over would write over them: the user decides
        named = "; ".join(f"{p.name}: {', '.join(problems[:2])}" for p, problems in skipped[:3])
        raise RunFolderError(
            f"resume=true: no checkpoint in {run_dir} is intact ({named}), so nothing can be resumed, and starting "
            "over would write over them. Restore them from a backup, or delete them to train this run again from "
            "its first step (rm -r " + " ".join(str(p) for p, _ in skipped) + ")")
    for damaged, problems in skipped:
        log.warning("checkpoint %s is damaged (%s): skipping it, resuming from the one before", damaged,
                    "; ".join(problems[:3]))
    if checkpoint is None:
        log.warning("resume=true but %s has no checkpoint yet: starting from scratch with the run's config", run_dir)
        return None
    log.info("Resuming from %s", checkpoint)
    return checkpoint


# What a folder about to hold a new run may already contain: what this project's own start writes first (the run
# lock, the .hydra record of a start that failed after writing it, the job's log) and nothing of anyone else's
RUN_START_ENTRIES = frozenset({".lock", ".hydra", ".hydra.tmp"})


def foreign_entries(run_dir: Path) -> list[str]:
    """The names in `run_dir` that no start of a run wrote (sorted; [] for a missing or empty folder): a folder with
    any is someone else's, and no run is trained into it."""
    if not run_dir.is_dir():
        return []
    return sorted(p.name for p in run_dir.iterdir()
                  if p.name not in RUN_START_ENTRIES and not (p.suffix == ".log" and p.is_file()))


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
            f"versions (its {TRAINING_RECORD} lists them; the lock: requirements/lock-linux-py311.txt), or add "
            f"`{ALLOW_OPTION}` to continue anyway (each resume's versions are recorded)")
    log.warning("resume under other library versions (%s): %s", ALLOW_OPTION, "; ".join(differences))


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


# What `apa compare`, `apa report` and `apa table3` write: a folder holding only these (and run folders) is theirs
REPORT_OUTPUTS = ("comparison*.md", "comparison*.csv", "*.png", "report.html", "table3*.md", "table3*.csv",
                  ".*.tmp", "multirun.yaml")


def _holds_runs(folder: Path) -> bool:
    return (folder / TRAINING_RECORD).exists() or any(
        (child / TRAINING_RECORD).exists() for child in folder.iterdir() if child.is_dir())


def output_folder(out: Path, flag: str = "--out") -> Path:
    """`out`, checked before a report is written into it: a new or empty folder, a run or sweep folder, or one that
    holds only what the reporting commands write. A file, a folder of someone else's files, or one this process may
    not write into is refused in one line (nothing is written)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{flag} {out} is a file, not a folder: name a folder (it is created if missing)")
    if out.is_dir():
        foreign = [p.name for p in sorted(out.iterdir())
                   if not (p.is_dir() and (p / TRAINING_RECORD).exists())
                   and not any(fnmatch.fnmatch(p.name, pattern) for pattern in REPORT_OUTPUTS)]
        if foreign and not _holds_runs(out):
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise RunFolderError(f"{out} holds files that are not this project's ({shown}): nothing is written into "
                                 f"it. Pass {flag} <a new or empty folder>")
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not os.access(existing, os.W_OK):
        raise RunFolderError(f"{existing} cannot be written (read-only): pass {flag} <a folder you can write>")
    return out


def discard_failed_start(run_dir: Path) -> None:
    """After a start that failed before any run began in `run_dir` (no run record, no checkpoint): remove what the
    start wrote (its .hydra record, its log; the error was printed), and the folder if that empties it, so that a
    failed start leaves no half-made run behind. Anything else in the folder stays."""
    if not run_dir.is_dir() or read_record(run_dir) is not None or _results(run_dir) or foreign_entries(run_dir):
        return
    for entry in run_dir.iterdir():
        if entry.name in (".hydra", ".hydra.tmp") and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.suffix == ".log" and entry.is_file():
            entry.unlink()
    if not any(run_dir.iterdir()):
        run_dir.rmdir()
