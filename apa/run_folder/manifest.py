"""Checkpoint manifests: every file's size and SHA-256, written before a checkpoint is renamed into place and
checked before a resume trusts it."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from apa.run_folder.layout import MANIFEST, resumable_checkpoints, write_atomic

log = logging.getLogger(__name__)


def _file_digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_manifest(checkpoint: Path) -> None:
    """Record every file of a just-written checkpoint (size and SHA-256), before it is renamed into place."""
    files = {str(p.relative_to(checkpoint)): {"bytes": p.stat().st_size, "sha256": _file_digest(p)}
             for p in sorted(checkpoint.rglob("*")) if p.is_file() and p.name != MANIFEST}
    write_atomic(checkpoint / MANIFEST, json.dumps(files, indent=1))


def manifest_problems(checkpoint: Path) -> list[str]:
    """What differs between a checkpoint and its manifest (empty: intact); a checkpoint without one is damaged."""
    manifest = checkpoint / MANIFEST
    if not manifest.is_file():
        return [f"{MANIFEST} is missing"]
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


def newest_intact_checkpoint(run_dir: Path, skipped: list | None = None) -> Path | None:
    """The newest checkpoint whose files match its manifest. Damaged newer ones are named in the log, or, given a
    `skipped` list, appended to it as (checkpoint, problems) for the caller to log once it decides to go ahead (a
    refused command writes nothing, not even a log line)."""
    for checkpoint in reversed(resumable_checkpoints(run_dir)):
        problems = manifest_problems(checkpoint)
        if not problems:
            return checkpoint
        if skipped is not None:
            skipped.append((checkpoint, problems))
        else:
            log.warning("checkpoint %s is damaged (%s): skipping it, resuming from the one before", checkpoint,
                        "; ".join(problems[:3]))
    return None
