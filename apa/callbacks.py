"""Hydra callbacks: what every sweep gets (SweepSummary), and evaluation as each training job ends (EvaluateAndCompare).

    python train.py -m experiment=demo lora=pretrained_r320,fresh_r64                    (SweepSummary: train.yaml)
    python train.py -m experiment=demo lora=pretrained_r320,fresh_r64 hydra/callbacks=evaluate_and_compare

SweepSummary, before the first job: two jobs that would train the same config are refused, the model and data
sources of every job are checked once (either: one `error:` line, exit 2, no sweep folder), and the keys every job
shares are left out of the job folders' names (apa.run_folder.naming). At the end: one line per job (ok or failed,
and where), then what to run next. A job refused with one of our errors (apa.errors) does not end the sweep in
Hydra's traceback: the sweep ends with the summary and exit 2 (the folder removed if it holds nothing but Hydra's
multirun.yaml). Jobs a launcher runs in processes of their own (submitit, joblib) tell the sweep's process how they
ended through `<sweep>/.jobs/` (apa.reporting.sweep), so the summary is the same.

EvaluateAndCompare (a SweepSummary) also evaluates each job's checkpoints as the job ends, then compares the sweep.
With `table3: true` (experiment=table3_lora_only / table3_unfreeze set it) it also evaluates the untrained model once
(the paper's epoch-0 row) into <sweep or run>/baseline/ and writes table3.md / table3.csv there (apa.reporting.table3).
It does what `evaluate.py run_dir=<job> checkpoint=all`, `apa compare <sweep>` and `apa report <sweep>` do, in the
training process, so the libraries are imported once instead of three times (about half of the CPU demo's wall time).
It prints one table, at the end: table3.md's with `table3`, else the comparison's, else each run's own (a single
run: its checkpoints); each job's evaluation logs to the job's log file, what runs after the jobs to
<sweep>/multirun.log (apa.console: the console shows warnings and errors only, unless verbose).
Hydra only warns when a callback raises, so failures are remembered and turned into a non-zero exit at the end.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import shlex
import shutil
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write

from apa.command_line import check_distinct_jobs, shared_keys, sweep_jobs
from apa.errors import (
    EXIT_USAGE,
    UserError,
    as_user_error,
    exit_interrupted,
    full_traceback_wanted,
    hydra_value,
    override_arg,
)
from apa.reporting.sweep import JobResult, read_job_records, shown, sweep_summary, write_job_record

log = logging.getLogger(__name__)
SWEEP_LOG = "multirun.log"  # <sweep>/multirun.log, beside Hydra's multirun.yaml: what ran after the jobs


def interruptible(method):
    """A callback step that evaluates or compares: Ctrl-C or SIGTERM there (evaluation raises Interrupted, saying
    what it kept) ends the command in one line, as in evaluate.py; Hydra, which catches only Exception, would show
    a traceback."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except KeyboardInterrupt as exc:
            if full_traceback_wanted():
                raise
            raise exit_interrupted(exc) from None

    return wrapper


@contextmanager
def logged_to(path: Path) -> Iterator[None]:
    """Every log record also into `path` (opened on the first one) while the block runs: Hydra's own logging, which
    is in place after the jobs, has a console and no file."""
    root = logging.getLogger()
    handler = logging.FileHandler(path, delay=True)
    handler.setFormatter(next((h.formatter for h in root.handlers if h.formatter), None))
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()

BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"  # jobs run here, one after another
SOURCE_KEYS = ("model", "data", "experiment")  # the overrides that can change where the model and data come from
HYDRA_WROTE = {"multirun.yaml", ".submitit"}  # what a sweep folder holds before any job writes into it


class SweepSummary(Callback):
    label = "the sweep"  # in the last line when a step after training failed

    def __init__(self) -> None:
        self.jobs: list[JobResult] = []
        self.failures: list[str] = []  # steps after training that failed (EvaluateAndCompare)
        self.active = True
        self.sweep_dir: Path | None = None
        self.created = False  # the sweep folder did not exist before this sweep
        self.batch_ends: set[int] = set()  # in-process jobs: the number of each batch's last job
        self.bug: BaseException | None = None  # the first job failure that is not one of our errors
        self.pid = os.getpid()  # the sweep's process: a job elsewhere (submitit, joblib) runs in another

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.utils import get_class

        entries = (OmegaConf.select(config, "hydra.callbacks") or {}).values()
        targets = [OmegaConf.select(entry, "_target_") for entry in entries if isinstance(entry, DictConfig)]
        classes = [get_class(t) for t in targets if isinstance(t, str) and t.startswith("apa.")]
        self.active = not any(issubclass(c, type(self)) and c is not type(self) for c in classes)
        if not self.active:
            return  # another callback (EvaluateAndCompare) does all this, once
        self.sweep_dir = Path(config.hydra.sweep.dir)
        self.created = not self.sweep_dir.exists()
        batches = sweep_jobs(config)
        jobs = [job for batch in batches for job in batch] if batches else []
        try:
            held = sorted(p.name for p in self.sweep_dir.iterdir()) if self.sweep_dir.is_dir() else []
            if held:  # Hydra would write its multirun.yaml over the one there, and jobs among its runs
                raise UserError(f"{self.sweep_dir} already holds results ({', '.join(held[:5])}): choose another "
                                "hydra.sweep.dir (or leave it unset for a fresh timestamped one); resume a run in it "
                                "with `python train.py resume=true hydra.run.dir=<its run folder>`")
            check_distinct_jobs(jobs, kwargs.get("config_name") or "train", config)
            self._check_sources(jobs, kwargs.get("config_name") or "train", config)
        except Exception as exc:
            error = as_user_error(exc)
            if error is None or full_traceback_wanted():
                raise
            print(f"error: {error}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_USAGE) from None
        if jobs:  # job folders name what sets each job apart: the shared keys are left out
            exclude = dict.fromkeys([*config.hydra.job.config.override_dirname.exclude_keys, *shared_keys(jobs)])
            with read_write(config.hydra.overrides):
                config.hydra.overrides.hydra.append("hydra.job.config.override_dirname.exclude_keys=["
                                                    + ",".join(f"'{k}'" for k in exclude) + "]")
        if OmegaConf.select(config, "hydra.launcher._target_") == BASIC_LAUNCHER and batches:
            ends = [sum(map(len, batches[:n + 1])) - 1 for n in range(len(batches))]
            self.batch_ends = set(ends)

    @staticmethod
    def _check_sources(jobs: list[list[str]], config_name: str, config: DictConfig) -> None:
        """Every distinct model and data source among the jobs, once: a hub id that cannot be had is refused now."""
        from hydra import compose

        from apa.checkpoint.hub import check_config_hub_access
        from apa.command_line import override_keys

        if not jobs:  # another sweeper: its jobs are not known in advance
            check_config_hub_access(config)
            return
        seen = set()
        for job in jobs:
            keys = override_keys(job)
            sources = tuple(o for o, k in zip(job, keys, strict=True) if k.split(".")[0].split("/")[0] in SOURCE_KEYS)
            if sources not in seen:
                seen.add(sources)
                check_config_hub_access(compose(config_name=config_name, overrides=job))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not self.active:
            return
        folder = Path(config.hydra.runtime.output_dir)
        result = JobResult(folder.name, folder, list(OmegaConf.select(config, "hydra.overrides.task", default=[])),
                           log=folder / f"{OmegaConf.select(config, 'hydra.job.name', default='train')}.log")
        if job_return.status != JobStatus.COMPLETED:
            exc = getattr(job_return, "_return_value", None)  # what the job raised (Hydra re-raises it later)
            known = as_user_error(exc) if isinstance(exc, BaseException) else None
            result.error = str(known) if known is not None else f"{type(exc).__name__}: {exc}"
            result.foreseeable = known is not None
            if known is None and self.bug is None:
                self.bug = exc
        self.jobs.append(result)
        if self._in_own_process(config):
            write_job_record(Path(config.hydra.sweep.dir), config.hydra.job.num, result, self.failures)
            if result.error is not None and result.foreseeable:  # told by the summary: not re-raised by the sweep's
                job_return.status, job_return._return_value = JobStatus.COMPLETED, None  # process as a traceback
            return
        last_of_batch = OmegaConf.select(config, "hydra.job.num", default=None) in self.batch_ends
        if last_of_batch and any(job.error is not None for job in self.jobs):
            self._end(interrupted=True)  # Hydra would end the sweep in the first failed job's traceback

    def _in_own_process(self, config: DictConfig) -> bool:
        """A sweep's job that a launcher runs in a process of its own (submitit, joblib), not the sweep's process."""
        from hydra.types import RunMode

        return OmegaConf.select(config, "hydra.mode") == RunMode.MULTIRUN and os.getpid() != self.pid

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.active:
            self.sweep_dir = self.sweep_dir or Path(OmegaConf.select(config, "hydra.sweep.dir", default=".") or ".")
            self._end(interrupted=False)

    def next_steps(self, sweep: str) -> list[str]:
        return [f"Next: apa compare {sweep}   (tables and plots; apa report {sweep} writes report.html)"]

    def _end(self, interrupted: bool) -> None:
        """The summary; then exit 2 if a job or a later step failed (1 with its traceback if a job hit a bug)."""
        from apa.run_folder import TRAINING_RECORD

        sweep = self.sweep_dir or Path(".")
        recorded, failures = read_job_records(sweep)  # jobs that ran in other processes (submitit, joblib)
        if not self.jobs:  # their records, else the runs they left
            self.failures += failures
            for job in recorded:  # its own process printed the error into a launcher's log: here it is whole
                if job.error is not None:
                    print(f"error: {job.name}: {job.error}", file=sys.stderr, flush=True)
            self.jobs = recorded or [JobResult(p.parent.name, p.parent, [])
                                     for p in sorted(sweep.glob(f"*/{TRAINING_RECORD}"))]
        removed = self.created and sweep.is_dir() and {p.name for p in sweep.iterdir()} <= HYDRA_WROTE
        if removed:  # nothing but Hydra's multirun.yaml: no sweep folder is left behind
            shutil.rmtree(sweep)
        failed = [job for job in self.jobs if job.error is not None]
        steps = [self._retry(failed[0], removed)] if failed else self.next_steps(shlex.quote(shown(sweep)))
        if removed:
            steps.append(f"(no job wrote anything: {shown(sweep)} is removed)")
        print(sweep_summary(sweep, self.jobs, steps), flush=True)
        if full_traceback_wanted() and interrupted:
            return  # Hydra raises the first failure with its whole traceback
        if self.bug is not None:  # not one of our errors: its traceback, as Python would print it
            traceback.print_exception(self.bug)
            raise SystemExit(1)
        if failed:
            print(f"error: {len(failed)} of {len(self.jobs)} jobs failed: {', '.join(j.name for j in failed)} (see "
                  "above)", file=sys.stderr)
        elif self.failures:
            print(f"error: {self.label} failed for: {', '.join(self.failures)} (see the log above)", file=sys.stderr)
        if failed or self.failures:
            raise SystemExit(EXIT_USAGE)

    @staticmethod
    def _retry(job: JobResult, removed: bool) -> str:
        """How to train a failed job alone once its error is fixed: into its own folder, or on from its checkpoints."""
        from apa.run_folder import TRAINING_RECORD

        where = "" if removed else " " + override_arg("hydra.run.dir", shown(job.folder))
        if (job.folder / TRAINING_RECORD).exists():
            return f"Once fixed, continue the failed job {job.name}: python train.py resume=true{where}"
        return f"Once fixed, train the failed job alone: python train.py {' '.join(map(shlex.quote, job.overrides))}" \
            + where


class EvaluateAndCompare(SweepSummary):
    label = "evaluate_and_compare"

    def __init__(self, checkpoint: str = "all", overrides: list[str] | None = None, compare: bool = True,
                 table3: bool = False, report: bool = True) -> None:
        super().__init__()
        self.checkpoint = checkpoint
        self.overrides = list(overrides or [])
        self.compare = compare
        self.table3 = table3
        self.report = report
        self.runs: list[Path] = []
        self.tables: dict[Path, str] = {}  # each run's own table, shown at the end unless a sweep table replaces it
        self.base_model: dict | None = None  # model/data/prompts of the jobs, for the untrained baseline

    @interruptible
    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status == JobStatus.COMPLETED:
            self._job_trained(config)
        super().on_job_end(config, job_return, **kwargs)  # the sweep's record of the job (a failure: its summary)

    def _job_trained(self, config: DictConfig) -> None:
        run_dir = Path(config.hydra.runtime.output_dir)
        self.runs.append(run_dir)
        if self.table3:
            self._remember_base_model(config)
        try:
            self._evaluate(run_dir)
        except Exception:
            log.exception("evaluation of %s failed; rerun it with `python evaluate.py %s checkpoint=%s`",
                          run_dir, override_arg("run_dir", run_dir), self.checkpoint)
            self.failures.append(str(run_dir))

    def _evaluate(self, run_dir: Path) -> None:
        import torch
        from hydra import compose

        from apa.distributed import rank
        from apa.evaluation.evaluate import evaluate
        from apa.reporting.epochs import report_evaluation
        from apa.run_folder import EVAL_DIR

        gc.collect()  # the trainer of the job that just ended still holds its model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        overrides = [f"run_dir={hydra_value(run_dir)}", f"checkpoint={self.checkpoint}", *self.overrides]
        cfg = compose(config_name="evaluate", overrides=overrides)
        results = evaluate(cfg, list(self.overrides), run_dir / EVAL_DIR)  # data parallel in a multi-task SLURM job
        if rank() == 0:
            self.tables[run_dir] = report_evaluation(results)

    def _remember_base_model(self, config: DictConfig) -> None:
        from omegaconf import OmegaConf

        self._remember({key: OmegaConf.to_container(config[key], resolve=True) for key in ("model", "data", "prompts")})

    def _remember(self, base: dict) -> None:
        base = {**base, "model": {k: v for k, v in base["model"].items() if k != "unfreeze"}}  # the base, untrained
        if self.base_model is None:
            self.base_model = base
        elif base != self.base_model:
            log.warning("table3: the jobs differ in model, data or prompts; the untrained baseline uses the first "
                        "job's (%s)", self.runs[0] if self.runs else "?")

    def _table3(self, out: Path) -> str | None:
        """The untrained baseline (once), then table3.md beside the runs; returns its table (None if none)."""
        from hydra import compose
        from omegaconf import OmegaConf

        from apa.evaluation.evaluate import evaluate
        from apa.reporting.table3 import BASELINE_DIR, write_table3
        from apa.run_folder import evaluations

        if not self.runs:  # the jobs ran in other processes (submitit, joblib): find them in the sweep folder
            from apa.run_folder import RunFolderError, find_runs, read_record

            try:
                self.runs = find_runs([out])
            except RunFolderError:
                return None  # no job finished
            for run in self.runs:
                record = read_record(run)["config"]
                self._remember({key: record[key] for key in ("model", "data", "prompts")})
        if self.base_model is None:
            return None  # no job finished
        try:
            baseline_dir = out / BASELINE_DIR
            if not evaluations(out, BASELINE_DIR):
                cfg = compose(config_name="evaluate", overrides=list(self.overrides))
                cfg = OmegaConf.merge(cfg, self.base_model)
                evaluate(cfg, list(self.overrides), baseline_dir)
            return write_table3(self.runs, baseline_dir, out)
        except Exception:
            log.exception("table3 for %s failed; rerun it with `apa table3 %s`", out, out)
            self.failures.append(f"table3 {out}")
            return None

    def _show(self, table: str | None) -> None:
        """The invocation's one table: `table` (a sweep's), else each run's own."""
        for text in [table] if table else [t for t in self.tables.values() if t]:
            print(text)

    @interruptible
    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._show(self._table3(self.runs[0]) if self.table3 and self.runs else None)
        self._exit_on_failures()

    @interruptible
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir", default="")))
        table = None
        with logged_to(sweep_dir / SWEEP_LOG) if str(sweep_dir) != "." and sweep_dir.is_dir() else nullcontext():
            if self.table3:
                table = self._table3(sweep_dir)
            if self.compare:
                from apa.reporting.compare import compare

                try:
                    compared = compare([sweep_dir])
                    table = table or compared  # table3.md's table, where there is one, is the sweep's
                except (Exception, SystemExit):
                    log.exception("comparing %s failed; rerun it with `apa compare %s`", sweep_dir, sweep_dir)
                    self.failures.append(f"compare {sweep_dir}")
            if self.report:
                from apa.reporting.report import write_report

                try:
                    write_report([sweep_dir])
                except (Exception, SystemExit):
                    log.exception("the report of %s failed; rerun it with `apa report %s`", sweep_dir, sweep_dir)
                    self.failures.append(f"report {sweep_dir}")
        self._show(table)
        super().on_multirun_end(config, **kwargs)  # the summary (its last line: the report to open), exit 2 on failure

    def next_steps(self, sweep: str) -> list[str]:
        if self.report:
            return [f"Next: open {sweep}/report.html in a browser (apa report {sweep} writes it again)"]
        return super().next_steps(sweep)

    def _exit_on_failures(self) -> None:
        if self.failures:
            print(f"error: {self.label} failed for: {', '.join(self.failures)} (see the log above)", file=sys.stderr)
            raise SystemExit(2)
