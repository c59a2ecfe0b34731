"""One training or evaluation per folder at a time: an fcntl lock that the kernel releases with its process."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from apa.run_folder.layout import LOCK, RunFolderError

log = logging.getLogger(__name__)


class RunLock:
    """An exclusive lock on a folder (`<folder>/.lock`, fcntl): one training or evaluation at a time.

    The kernel releases it when its process dies, however it dies; a lock file left behind by a dead process is
    taken over with a log line. The file holds the holder's PID, host and start time, for the refusal message.
    """

    def __init__(self, folder: Path, purpose: str):
        self.path = Path(folder) / LOCK
        self.purpose = purpose
        self._fd: int | None = None

    def _holder(self) -> str:
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return "another process"
        return (f"{info.get('purpose', 'a process')} (PID {info.get('pid', '?')} on {info.get('host', '?')}, "
                f"since {info.get('since', '?')})")

    def _unusable(self, error: OSError) -> RunFolderError:
        """Why the lock cannot be taken at all (a file where the folder should be, a folder where the lock file
        should be, no permission), as one line naming the fix."""
        folder = self.path.parent
        if folder.exists() and not folder.is_dir():
            fix = f"{folder} is a file, not a folder: choose another folder"
        elif self.path.is_dir():
            fix = f"a folder is in the place of the lock file {self.path}: remove it (nothing of a run is in it)"
        else:
            fix = f"{folder} cannot be written ({error.strerror}): choose a folder you can write to"
        return RunFolderError(f"cannot lock {folder} for {self.purpose}: {fix}")

    def acquire(self) -> RunLock:
        try:
            return self._acquire()
        except (NotADirectoryError, FileExistsError, IsADirectoryError, PermissionError) as e:
            raise self._unusable(e) from e

    def _acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunFolderError(f"{self.path.parent} is in use by {self._holder()}: wait for it to finish, or "
                                     "use another folder") from None
            try:  # the holder before us may have removed the file between our open and our lock: try again
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        stale = os.read(fd, 4096).decode(errors="replace").strip()
        if stale:
            log.warning("taking over the lock on %s left by %s, which is no longer running", self.path.parent,
                        self._describe(stale))
        info = {"purpose": self.purpose, "pid": os.getpid(), "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def holder_if_held(self) -> str | None:
        """Who holds this lock now (another process), or None; takes and changes nothing."""
        if not self.path.is_file():
            return None
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return self._holder()
        finally:
            os.close(fd)  # closing drops our shared lock
        return None

    @staticmethod
    def _describe(text: str) -> str:
        try:
            info = json.loads(text)
            return f"{info.get('purpose')} (PID {info.get('pid')} on {info.get('host')})"
        except ValueError:
            return "an unknown process"

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
