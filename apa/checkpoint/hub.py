"""Before anything heavy: can the Hugging Face hub ids of a config be had, from the network or the local cache?

Without this, a machine without network spends minutes in the hub client's retries (146 s measured for
`train.py` without network) before a long traceback. Here a refusal takes a few seconds and one line, naming the
three ways forward; when everything needed is cached, the process reads the cache only (apa.offline).
"""

from __future__ import annotations

import logging
from pathlib import Path

from apa.errors import UserError
from apa.offline import download_hint, go_offline, hub_unreachable, offline

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


def check_hub_access(needed: list[tuple[str, str, str, str | None]]) -> None:
    """`needed`: (hub id, repo type 'model'|'dataset', the config key that names it, revision). Raises
    HubUnreachable for one that is neither cached nor downloadable. When the hub cannot be reached but everything
    is cached, the process goes offline (go_offline): every later hub call reads the cache at once."""
    needed = [n for n in needed if n[0] and looks_like_hub_id(n[0])]
    if not needed:
        return
    reason = hub_unreachable()
    if reason is None:
        return
    for repo_id, repo_type, key, revision in needed:
        if not _cached(repo_id, repo_type):
            local = (f"model.path=<dir> after `{download_hint(repo_id, revision)}`" if repo_type == "model" else
                     f"data.hub_id=<dir> after `{download_hint(repo_id, revision, repo_type)}`, or data.source=local "
                     "data.path=<corpus root>")
            from huggingface_hub import constants

            raise HubUnreachable(f"{key}={repo_id} is not in the local hub cache ({constants.HF_HUB_CACHE}) and the "
                                 f"hub cannot be reached ({reason}). " + WAYS_FORWARD.format(local=local))
    if not offline():
        log.warning("the hub cannot be reached (%s): reading %s from the local hub cache only", reason,
                    ", ".join(n[0] for n in needed))
        go_offline()


def check_config_hub_access(cfg) -> None:
    """The model and data hub ids a train or evaluate config needs."""
    needed = []
    model = cfg.get("model")
    if model is not None and not model.get("tiny") and not model.get("random") and model.get("path"):
        needed.append((str(model.path), "model", "model.path", model.get("revision")))
    data = cfg.get("data")
    if data is not None:
        from apa.data.release import check_data_statement

        check_data_statement(data)  # a pinned revision and a stated label release, before any download
    if data is not None and data.get("source") == "hub" and data.get("hub_id"):
        needed.append((str(data.hub_id), "dataset", "data.hub_id", data.get("revision")))
    check_hub_access(needed)
