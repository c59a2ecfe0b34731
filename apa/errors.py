"""Errors the project raises on purpose, and how the command-line entry points print them.

Every such error is a `UserError`: its message says what is wrong and how to fix it. The entry points (train.py,
evaluate.py, `apa compare|bench|predict|report|table3`) print it as one line, `error: <message>`, and exit
with status 2; `HYDRA_FULL_ERROR=1` shows the traceback instead. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import shlex
import signal
import sys
import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import TypeVar

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports an interrupted command
F = TypeVar("F", bound=Callable)
log = logging.getLogger(__name__)


class UserError(Exception):
    """Wrong input, configuration or state, named with its fix. Printed as one line, never as a traceback."""


def full_traceback_wanted() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


class Interrupted(KeyboardInterrupt):
    """Stopped by Ctrl-C or SIGTERM where what was kept is known (a second signal while a checkpoint was pending, a
    signal during a training's start or an evaluation): the message says it and how to continue. The exit status is
    128 + `signum` where given, else 130."""

    def __init__(self, message: str = "", signum: int | None = None):
        super().__init__(message)
        self.exit_code = 128 + signum if signum else EXIT_INTERRUPTED


class StopSignals:
    """SIGTERM (SLURM preemption; torchrun passes it on to its ranks) and SIGINT (Ctrl-C), caught while installed,
    so that a command can say what it kept and how to continue (the one mechanism for training and evaluation).

    The first signal stops at once (KeyboardInterrupt: nothing is pending that is worth waiting for) unless the
    work has deferred it (`defer`): then it is noted in `received`, and the work stops at its next safe point (after
    the training step, after the batch of answers in progress), saying so. A second signal always stops at once.
    `received` names the signal for the message and the exit status (128 + it). One instance is installed at a time
    (signal handlers are the process's), on the main thread only; `active()` is it."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)
    _active: StopSignals | None = None

    def __init__(self):
        self.received: int | None = None
        self.later: str | None = None  # what the work does at its next safe point, once deferred
        self._previous: dict[int, object] = {}
        self._outer: StopSignals | None = None  # the one active before, active again after `restore`

    @classmethod
    def active(cls) -> StopSignals | None:
        return cls._active

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else "a signal"

    def install(self) -> StopSignals:
        """Catch the signals (once; a no-op off the main thread, where Python cannot)."""
        if not self._previous and threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
            self._outer, StopSignals._active = StopSignals._active, self
        return self

    def defer(self, later: str | None) -> None:
        """From now on a first signal waits for the work's next safe point, which checks `received`; `later` says
        what happens there ("saving a checkpoint after this step"). None: stop at once again."""
        self.later = later

    @contextmanager
    def deferred(self, later: str):
        """`defer(later)` while the block runs; at once again after it."""
        before = self.later
        self.defer(later)
        try:
            yield self
        finally:
            self.defer(before)

    def restore(self) -> None:
        """The handlers from before `install` (also when the work ends by an exception)."""
        if not self._previous:
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        StopSignals._active = self._outer

    def _handle(self, signum, frame):
        first = self.received is None
        self.received = self.received or signum
        if not first or self.later is None:
            raise KeyboardInterrupt
        log.warning("Received %s: %s, then stopping (again to stop now)", self.name, self.later)


# How torch reports a write that failed part-way (a full disk among the causes): its own RuntimeError, not OSError
TORCH_WRITE_FAILURES = ("unexpected pos", "PytorchStreamWriter failed writing", "file write failed")


def _disk_full(exc: BaseException) -> str | None:
    """The file (or '') if `exc` or any exception it was raised from is a full disk: ENOSPC anywhere in the chain, or
    torch's own write failure (which carries no errno); None otherwise."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return exc.filename or ""
        if isinstance(exc, RuntimeError) and any(s in str(exc) for s in TORCH_WRITE_FAILURES):
            return ""
        exc = exc.__cause__ or exc.__context__
    return None


# What the file system says when a path the user chose cannot be used as asked (a file where a folder goes, a read-only
# run, a dangling link): the user's to fix, so one line naming the path, never a traceback
PATH_PROBLEMS = {errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                 errno.EROFS: "read-only file system", errno.ENOTDIR: "a file stands where a folder is expected",
                 errno.EISDIR: "a folder stands where a file is expected",
                 errno.EEXIST: "it exists as something else (a file, or a link to nothing)",
                 errno.ELOOP: "a loop of symbolic links", errno.ENAMETOOLONG: "the name is too long"}


def _path_problem(exc: BaseException) -> UserError | None:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in PATH_PROBLEMS and exc.filename:
            return UserError(f"cannot use {exc.filename}: {PATH_PROBLEMS[exc.errno]}. Fix that path (its "
                             "permissions, or what stands there), or point the command elsewhere (hydra.run.dir=, "
                             "--out, APA_CACHE_DIR)")
        exc = exc.__cause__ or exc.__context__
    return None


def _config_problem(exc: BaseException) -> UserError | None:
    """An override that leaves the config unresolvable (`lora.r=${oops}`, `~lora`): the user's to fix, in one line."""
    if not type(exc).__module__.startswith("omegaconf"):
        return None
    from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

    if not isinstance(exc, (InterpolationResolutionError, MissingMandatoryValue)):
        return None
    key = getattr(exc, "full_key", None)
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return UserError(f"the config cannot be resolved{f' at {key}' if key else ''}: {first}. Check that override (an "
                     "interpolation `${…}` must name an existing key; a config group removed with `~` needs a value: "
                     "`python train.py --help` lists the groups and their options)")


def as_user_error(exc: BaseException) -> UserError | None:
    """The one-line form of an error a user can fix: our own, a full disk (whatever type reported it), or a path that
    cannot be used (a file where a folder goes, read-only, a dangling link)."""
    if isinstance(exc, UserError):
        return exc
    problem = _path_problem(exc)
    if problem is not None:
        return problem
    config = _config_problem(exc)
    if config is not None:
        return config
    where = _disk_full(exc)
    if where is not None:
        return UserError(f"no space left on the device ({where or 'a write failed part-way'}). Every complete "
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


def exit_interrupted(exc: KeyboardInterrupt) -> SystemExit:
    """Ctrl-C or SIGTERM as one line (with how to continue, where known), never a traceback: print it and return
    the SystemExit to raise (status 128 + the signal's number, where known)."""
    start = "\n" if sys.stderr.isatty() else ""  # below a progress bar's unfinished line
    print(f"{start}error: {str(exc) or 'interrupted (Ctrl-C)'}", file=sys.stderr, flush=True)
    return SystemExit(getattr(exc, "exit_code", EXIT_INTERRUPTED))


def one_line_errors(fn: F) -> F:
    """Decorator for entry points: a UserError (or a full disk) becomes `error: …` on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        for stream in (sys.stdout, sys.stderr):  # an ASCII-only console prints `?` for `†`, `−`, never a traceback
            if hasattr(stream, "reconfigure") and getattr(stream, "errors", "strict") == "strict":
                stream.reconfigure(errors="replace")
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt as exc:  # Ctrl-C: one line (with how to continue, where known), never a traceback
            if full_traceback_wanted():
                raise
            raise exit_interrupted(exc) from None
        except Exception as exc:
            error = as_user_error(exc)
            if error is None or full_traceback_wanted():
                raise
            print(f"error: {error}", file=sys.stderr, flush=True)
            if _in_multirun_job():  # SystemExit would end the whole sweep; Hydra marks this job failed and goes on
                raise
            raise SystemExit(EXIT_USAGE) from None

    return wrapper  # type: ignore[return-value]


_PLAIN = re.compile(r"[\w./:@+-]+")


def hydra_value(value: object) -> str:
    """`value` as Hydra's override grammar reads it back unchanged: as it is where it holds plain path characters
    only, else quoted (a space, `=`, a comma or a quote would otherwise be read as grammar)."""
    text = str(value)
    if _PLAIN.fullmatch(text):
        return text
    quote = "'" if "'" not in text else '"' if '"' not in text else "'"
    if quote in text:
        text = text.replace(quote, "\\" + quote)
    return quote + re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text) + quote  # a trailing \ would escape it


def override_arg(key: str, value: object) -> str:
    """`key=value` as a pasted command needs it: the value as `hydra_value` quotes it, then the whole for the shell
    (`"hydra.run.dir='/my runs/a=1'"`)."""
    arg = f"{key}={hydra_value(value)}"
    return arg if _PLAIN.fullmatch(arg.replace("=", "")) else (
        f'"{arg}"' if not re.search(r'["$`\\!]', arg) else shlex.quote(arg))
