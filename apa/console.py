"""What the console shows: the end result of a command (its one table, its errors and warnings) and progress bars;
the detail (data, lengths, parameters, each evaluation, the trainer's loss lines) goes to the log files only.

    APA_VERBOSE=1 python train.py ...        every log record on the console too (INFO and up), as before
    python train.py ... hydra.verbose=true   Hydra's own switch: the root logger at DEBUG, and all of it shown
    python train.py ... hydra.verbose=apa    the same for some loggers only (Hydra's list form): their records shown

The log files are unchanged by either: they always hold every INFO record (conf/hydra/job_logging/apa.yaml for a
job's `<run>/<job>.log`; `<sweep>/multirun.log` for what the sweep callback does after the jobs).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

VERBOSE_ENV = "APA_VERBOSE"


def _hydra_verbose() -> bool | str | list:
    """`hydra.verbose` of the running Hydra app (False outside one)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().verbose if HydraConfig.initialized() else False
    except Exception:  # no Hydra, or a config without the key
        return False


def verbose(logger: str = "") -> bool:
    """Whether the console should show `logger`'s detail: APA_VERBOSE set (not 0/false), or `hydra.verbose` true or
    naming `logger` or one of its parents."""
    if os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no"):
        return True
    setting = _hydra_verbose()
    if isinstance(setting, bool):
        return setting
    names = [setting] if isinstance(setting, str) else list(setting or [])
    return any(logger == name or logger.startswith(f"{name}.") for name in names)


class ConsoleFilter(logging.Filter):
    """On a console handler: warnings and errors always; lower levels only when `verbose` says so."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or verbose(record.name)


class RunLogHandler(logging.FileHandler):
    """A job's `<run>/<job>.log`, opened on its first record (a command refused before it logs anything leaves an
    existing run's log untouched). Once a refused start has removed its run folder, records are no longer written:
    opening the file would fail (the folder is gone), in the middle of a launcher's own logging (submitit's "Job
    completed"). Those records still reach the console."""

    def __init__(self, filename: str, mode: str = "a", encoding: str | None = None, delay: bool = True, **kwargs):
        super().__init__(filename, mode, encoding, delay=True, **kwargs)

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is None and not os.path.isdir(os.path.dirname(self.baseFilename)):
            return
        super().emit(record)


def move_log_files(old: Path, new: Path) -> None:
    """A job log file in the folder `old` (conf/hydra/job_logging/apa.yaml: a FileHandler on the root logger) goes on
    in the folder `new` (made if missing): a command that learns where its results go only after Hydra set up its log
    (evaluate.py on other data: <run>/eval-<data>-<digest>/, not <run>/eval/) keeps its log beside them. What was
    written before stays where it is (usually nothing: the file opens on its first record)."""
    where = os.path.abspath(old)
    for handler in logging.getLogger().handlers:
        if not isinstance(handler, logging.FileHandler) or os.path.dirname(handler.baseFilename) != where:
            continue
        Path(new).mkdir(parents=True, exist_ok=True)
        handler.acquire()
        try:
            if handler.stream is not None:
                handler.stream.close()
                handler.stream = None  # opened again, in `new`, on the next record
            handler.baseFilename = os.path.abspath(Path(new) / os.path.basename(handler.baseFilename))
        finally:
            handler.release()
