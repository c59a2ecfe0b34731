"""Hydra callback: evaluate each training job as soon as it ends, and compare the sweep when it ends.

    python train.py -m experiment=demo lora=pretrained_r320,paper_r64 hydra/callbacks=evaluate_and_compare

It does what `evaluate.py run_dir=<job> checkpoint=all`, `python -m apa.compare <sweep>` and `python -m apa.report
<sweep>` do, in the training process, so the libraries are imported once instead of three times (about half of the
CPU demo's wall time).
Hydra only warns when a callback raises, so failures are remembered and turned into a non-zero exit at the end.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class EvaluateAndCompare(Callback):
    def __init__(self, checkpoint: str = "all", overrides: list[str] | None = None, compare: bool = True,
                 report: bool = True) -> None:
        self.checkpoint = checkpoint
        self.overrides = list(overrides or [])
        self.compare = compare
        self.report = report
        self.failures: list[str] = []

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.COMPLETED:
            return  # Hydra reports the training failure itself
        run_dir = Path(config.hydra.runtime.output_dir)
        try:
            self._evaluate(run_dir)
        except Exception:
            log.exception("evaluation of %s failed; rerun it with `python evaluate.py run_dir=%s checkpoint=%s`",
                          run_dir, run_dir, self.checkpoint)
            self.failures.append(str(run_dir))

    def _evaluate(self, run_dir: Path) -> None:
        import torch
        from hydra import compose

        from apa.evaluation import evaluate, overrides_data

        gc.collect()  # the trainer of the job that just ended still holds its model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        overrides = [f"run_dir={run_dir}", f"checkpoint={self.checkpoint}", *self.overrides]
        cfg = compose(config_name="evaluate", overrides=overrides)
        evaluate(cfg, overrides_data(self.overrides), run_dir / "eval")

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._exit_on_failures()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.compare:
            from apa.compare import compare

            sweep_dir = Path(config.hydra.sweep.dir)
            try:
                print(compare([sweep_dir]))
            except (Exception, SystemExit):
                log.exception("comparing %s failed; rerun it with `python -m apa.compare %s`", sweep_dir, sweep_dir)
                self.failures.append(f"compare {sweep_dir}")
        if self.report:
            from apa.report import write_report

            sweep_dir = OmegaConf.select(config, "hydra.sweep.dir")
            try:
                print(f"report: {write_report([Path(sweep_dir)])}")
            except (Exception, SystemExit):
                log.exception("the report of %s failed; rerun it with `python -m apa.report %s`", sweep_dir, sweep_dir)
                self.failures.append(f"report {sweep_dir}")
        self._exit_on_failures()

    def _exit_on_failures(self) -> None:
        if self.failures:
            raise SystemExit(f"evaluate_and_compare failed for: {', '.join(self.failures)} (see the log above)")
