"""Is this environment the lock? Every installed distribution must be pinned by the lock at the installed version
(a local build tag such as torch's `+cpu` aside); prints the differences, exit 1 if any.

    python scripts/check_lock.py [requirements/lock-linux-py311.txt]   # CI runs it after installing
    python scripts/check_lock.py --report                               # list them, exit 0 (the drift check)
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import distributions
from pathlib import Path

DEFAULT_LOCK = Path(__file__).resolve().parent.parent / "requirements" / "lock-linux-py311.txt"
# installers and the project itself are not part of the lock
NOT_LOCKED = {"pip", "setuptools", "wheel", "uv", "apa"}


def _name(raw: str) -> str:
    return re.sub(r"[-_.]+", "-", raw).lower()


def read_lock(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)", line)
        if match:
            pins[_name(match.group(1))] = match.group(2)
    return pins


def differences(lock: dict[str, str]) -> list[str]:
    out = []
    for dist in distributions():
        name = _name(dist.metadata["Name"])
        if name in NOT_LOCKED:
            continue
        installed = dist.version
        pinned = lock.get(name)
        if pinned is None:
            out.append(f"{name}=={installed} is installed but not in the lock")
        elif installed.split("+")[0] != pinned.split("+")[0]:
            out.append(f"{name}: {installed} installed, {pinned} locked")
    return sorted(out)


def main(argv: list[str]) -> int:
    report = "--report" in argv
    paths = [a for a in argv if not a.startswith("--")]
    lock_path = Path(paths[0]) if paths else DEFAULT_LOCK
    found = differences(read_lock(lock_path))
    for line in found:
        print(("drift: " if report else "error: ") + line)
    if not found:
        print(f"environment = {lock_path.name} ({len(read_lock(lock_path))} pins)")
    return 1 if found and not report else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
