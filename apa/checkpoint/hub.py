"""Before anything heavy: can the Hugging Face hub ids of a config be had, from the network or the local cache?

Without this, a machine without network spends minutes in the hub client's retries (146 s measured for
`train.py` without network) before a long traceback. Here a refusal takes a few seconds and one line, naming the
three ways forward.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from apa.errors import UserError

log = logging.getLogger(__name__)

WAYS_FORWARD = ("Three ways forward: a local copy ({local}), HF_HUB_OFFLINE=1 once the files are in the hub cache, "
                "or experiment=demo (the tiny model and the bundled sample, no download)")


class HubUnreachable(UserError):
    """A hub id is needed, the hub cannot be reached and nothing is cached."""


def looks_like_hub_id(path: str) -> bool:
    local = Path(path).expanduser()
    return not (local.exists() or local.is_absolute() or path.startswith((".", "~")) or path.count("/") != 1)


def _cached(repo_id: str, repo_type: str) -> bool:
    from huggingface_hub import constants

    folder = Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    return folder.is_dir() and any(folder.glob("snapshots/*/*"))


def unreachable_reason(timeout: float = 3.0) -> str | None:
    """None when the hub's host accepts a connection, else why not."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as err:
        return f"{host}:{port}: {err.strerror or err}"


def check_hub_access(needed: list[tuple[str, str, str]]) -> None:
    """`needed`: (hub id, repo type 'model'|'dataset', the config key that names it). Raises HubUnreachable."""
    needed = [n for n in needed if n[0] and looks_like_hub_id(n[0])]
    if not needed:
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    reason = "HF_HUB_OFFLINE=1" if offline else None
    for repo_id, repo_type, key in needed:
        if _cached(repo_id, repo_type):
            continue
        if reason is None:
            reason = unreachable_reason() or ""
        if reason:
            local = ("model.path=<folder>: huggingface-cli download " + repo_id + " --local-dir <folder>"
                     if repo_type == "model" else "data.source=local data.path=<corpus root>")
            from huggingface_hub import constants

            raise HubUnreachable(f"{key}={repo_id} is not in the local hub cache ({constants.HF_HUB_CACHE}) and the "
                                 f"hub cannot be reached ({reason}). " + WAYS_FORWARD.format(local=local))


def check_config_hub_access(cfg) -> None:
    """The model and data hub ids a train or evaluate config needs."""
    needed = []
    model = cfg.get("model")
    if model is not None and not model.get("tiny") and not model.get("random") and model.get("path"):
        needed.append((str(model.path), "model", "model.path"))
    data = cfg.get("data")
    if data is not None:
        from apa.data.release import check_data_statement

        check_data_statement(data)  # a pinned revision and a stated label release, before any download
    if data is not None and data.get("source") == "hub" and data.get("hub_id"):
        needed.append((str(data.hub_id), "dataset", "data.hub_id"))
    check_hub_access(needed)
