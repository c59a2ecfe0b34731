"""Errors the project raises on purpose, and how the command-line entry points print them.

Every such error is a `UserError`: its message says what is wrong and how to fix it. The entry points (train.py,
evaluate.py, `apa compare|bench|predict|report|table3`) print it as one line, `error: <message>`, and exit
with status 2; `HYDRA_FULL_ERROR=1` shows the traceback instead. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable
from typing import TypeVar

EXIT_USAGE = 2
F = TypeVar("F", bound=Callable)


class UserError(Exception):
    """Wrong input, configuration or state, named with its fix. Printed as one line, never as a traceback."""


def full_traceback_wanted() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def as_user_error(exc: BaseException) -> UserError | None:
    """The one-line form of an error a user can fix: our own, or a full disk."""
    if isinstance(exc, UserError):
        return exc
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return UserError(f"no space left on the device ({exc.filename or 'while writing'}). Every complete "
                         "checkpoint and prediction batch written before stays intact (they are renamed into place "
                         "only once complete): free space, then rerun the same command with resume=true (training) "
                         "or unchanged (evaluation) to continue")
    return None


def _in_multirun_job() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # no Hydra, or no job: a plain command
        return False


def one_line_errors(fn: F) -> F:
    """Decorator for entry points: a UserError (or a full disk) becomes `error: …` on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            error = as_user_error(exc)
            if error is None or full_traceback_wanted():
                raise
            print(f"error: {error}", file=sys.stderr, flush=True)
            if _in_multirun_job():  # SystemExit would end the whole sweep; Hydra marks this job failed and goes on
                raise
            raise SystemExit(EXIT_USAGE) from None

    return wrapper  # type: ignore[return-value]
