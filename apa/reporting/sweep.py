"""The lines a sweep ends with (apa.callbacks.SweepSummary): each job ok or failed and where, then what to run next."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MAX_ERROR = 160  # characters of a failed job's error shown here (the whole line was printed when it failed)


@dataclass
class JobResult:
    name: str  # the job's folder name
    folder: Path
    overrides: list[str]  # the job's own command line (Hydra's task overrides)
    log: Path | None = None  # where the job's log file is (if it logged anything)
    error: str | None = None  # None: trained
    foreseeable: bool = True  # the error is one of ours (apa.errors), not a bug


def shown(path: Path) -> str:
    """A path as a user would type it: relative to the working directory where it lies below it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def sweep_summary(sweep_dir: Path, jobs: list[JobResult], next_steps: list[str]) -> str:
    """One screen: a header, one line per job, then `next_steps` (already worded by the caller)."""
    failed = [job for job in jobs if job.error is not None]
    counts = f"{len(jobs)} job(s), {len(jobs) - len(failed)} ok" + (f", {len(failed)} failed" if failed else "")
    lines = [f"Sweep {shown(sweep_dir)}: {counts}"]
    width = max((len(job.name) for job in jobs), default=0)
    for job in jobs:
        if job.error is None:
            lines.append(f"  ok      {job.name:<{width}}  {shown(job.folder)}")
            continue
        error = job.error if len(job.error) <= MAX_ERROR else job.error[:MAX_ERROR - 1] + "…"
        where = f"log: {shown(job.log)}" if job.log and job.log.is_file() else "no log: it stopped before logging"
        lines.append(f"  failed  {job.name:<{width}}  {error} ({where})")
    return "\n".join([*lines, *next_steps])
