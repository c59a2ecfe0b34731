"""Whether the Hugging Face hub can be used now, and switching this process to the local cache when it cannot.

The hub clients wait and retry on their own when the network is down (30 s measured for one dataset read with the
endpoint refusing connections). Every hub path asks `hub_unreachable()` first (one probe per process, at most
REACH_SECONDS per step), then either reads the local cache at once (`go_offline`) or fails in one line.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
import threading
from urllib.parse import urlparse

REACH_SECONDS = 3.0  # the most the hub's host may take to resolve, then to accept a connection
TRUE = ("1", "true", "yes", "on")


def offline() -> bool:
    """HF_HUB_OFFLINE is set: in the environment, or in the hub client's constants (go_offline)."""
    hub = sys.modules.get("huggingface_hub.constants")
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in TRUE or bool(hub is not None and hub.HF_HUB_OFFLINE)


def go_offline() -> None:
    """From here on, this process's hub clients read their local cache only: no request, no retry, no time-out."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # for clients imported later
    for module in ("huggingface_hub.constants", "datasets.config"):  # those imported already read it at import
        if module in sys.modules:
            sys.modules[module].HF_HUB_OFFLINE = True


def download_hint(repo_id: str, revision: str | None, repo_type: str = "model") -> str:
    """The command that makes a local copy, as the installed huggingface_hub spells it (`hf`)."""
    kind = "" if repo_type == "model" else f" --repo-type {repo_type}"
    at = f" --revision {revision}" if revision else ""
    return f"hf download {repo_id}{kind}{at} --local-dir <dir>"


def hub_unreachable() -> str | None:
    """Why the hub cannot be used now (`HF_HUB_OFFLINE=1`, or what the connection attempt met), None when it can."""
    if offline():
        return "HF_HUB_OFFLINE=1"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return _probe(endpoint.hostname or "huggingface.co", endpoint.port or (443 if endpoint.scheme == "https" else 80))


@functools.cache
def _probe(host: str, port: int, timeout: float = REACH_SECONDS) -> str | None:
    """None when `host` resolves and accepts a connection within `timeout` seconds each, else why not. The name
    lookup runs in a daemon thread: a resolver that gets no answer takes 5 s a try, and would hold the exit."""
    found: list = []

    def lookup() -> None:
        try:
            found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0])
        except OSError as err:
            found.append(err)

    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(timeout)
    if not found:
        return f"{host}: no answer to the name lookup within {timeout:g} s"
    try:
        if isinstance(found[0], OSError):
            raise found[0]
        family, kind, proto, _, address = found[0]
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(timeout)
            sock.connect(address)
        return None
    except OSError as err:
        return f"{host}:{port}: {err.strerror or err}"
