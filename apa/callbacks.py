"""Hydra callback: evaluate each training job as soon as it ends, and compare the sweep when it ends.

    python train.py -m experiment=demo lora=pretrained_r320,fresh_r64 hydra/callbacks=evaluate_and_compare

With `table3: true` (experiment=table3_lora_only / table3_unfreeze set it) it also evaluates the untrained model once
(the paper's epoch-0 row) into <sweep or run>/baseline/ and writes table3.md / table3.csv there (apa.reporting.table3).

It does what `evaluate.py run_dir=<job> checkpoint=all`, `apa compare <sweep>` and `apa report
<sweep>` do, in the training process, so the libraries are imported once instead of three times (about half of the
CPU demo's wall time).
It prints one table, at the end: table3.md's with `table3`, else the comparison's, else each run's own (a single
run: its checkpoints); each job's evaluation logs to the job's log file, what runs after the jobs to
<sweep>/multirun.log (apa.console: the console shows warnings and errors only, unless verbose).
Hydra only warns when a callback raises, so failures are remembered and turned into a non-zero exit at the end.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from apa.errors import hydra_value, override_arg

log = logging.getLogger(__name__)
SWEEP_LOG = "multirun.log"  # <sweep>/multirun.log, beside Hydra's multirun.yaml: what ran after the jobs


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


class EvaluateAndCompare(Callback):
    def __init__(self, checkpoint: str = "all", overrides: list[str] | None = None, compare: bool = True,
                 table3: bool = False, report: bool = True) -> None:
        self.checkpoint = checkpoint
        self.overrides = list(overrides or [])
        self.compare = compare
        self.table3 = table3
        self.report = report
        self.failures: list[str] = []
        self.runs: list[Path] = []
        self.tables: dict[Path, str] = {}  # each run's own table, shown at the end unless a sweep table replaces it
        self.base_model: dict | None = None  # model/data/prompts of the jobs, for the untrained baseline

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.COMPLETED:
            return  # Hydra reports the training failure itself
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

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._show(self._table3(self.runs[0]) if self.table3 and self.runs else None)
        self._exit_on_failures()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir", default="")))
        table, report = None, None
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
                    report = write_report([sweep_dir])
                except (Exception, SystemExit):
                    log.exception("the report of %s failed; rerun it with `apa report %s`", sweep_dir, sweep_dir)
                    self.failures.append(f"report {sweep_dir}")
        self._show(table)
        if report is not None:
            print(f"report: {report}")
        self._exit_on_failures()

    def _exit_on_failures(self) -> None:
        if self.failures:
            print(f"error: evaluate_and_compare failed for: {', '.join(self.failures)} (see the log above)",
                  file=sys.stderr)
            raise SystemExit(2)
