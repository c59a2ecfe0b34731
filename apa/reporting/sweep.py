"""The lines a sweep ends with (apa.callbacks.SweepSummary): each job ok or failed and where, then what to run next."""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from apa.run_folder.layout import write_json

JOB_RECORDS = ".jobs"  # <sweep>/.jobs/<job number>.json: each job's outcome, from a job run in another process
MAX_ERROR = 160  # characters of a failed job's error shown here (the whole line was printed when it failed)


@dataclass
class JobResult:
    name: str  # the job's folder name
    folder: Path
    overrides: list[str]  # the job's own command line (Hydra's task overrides)
    log: Path | None = None  # where the job's log file is (if it logged anything)
    error: str | None = None  # None: trained
    foreseeable: bool = True  # the error is one of ours (apa.errors), not a bug


def write_job_record(sweep_dir: Path, num: int, job: JobResult, failures: list[str]) -> None:
    """A job run in another process (submitit, joblib) tells the sweep's own process how it ended, through the sweep
    folder they share: its result, and the steps after training that failed in it (EvaluateAndCompare)."""
    folder = Path(sweep_dir) / JOB_RECORDS
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / f"{int(num)}.json", {**dataclasses.asdict(job), "failures": failures})


def read_job_records(sweep_dir: Path) -> tuple[list[JobResult], list[str]]:
    """The jobs' records, in job order, and the failures they name; the records are removed once read."""
    folder = Path(sweep_dir) / JOB_RECORDS
    jobs, failures = [], []
    for path in sorted(folder.glob("*.json"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1):
        try:
            record = json.loads(path.read_text())
            failures += [str(f) for f in record.pop("failures", [])]
            jobs.append(JobResult(**{**record, "folder": Path(record["folder"]),
                                     "log": Path(record["log"]) if record.get("log") else None}))
        except (OSError, ValueError, TypeError, KeyError):  # a record cut short: the job is told by its folder
            continue
    shutil.rmtree(folder, ignore_errors=True)
    return jobs, failures


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
