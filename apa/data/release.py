"""Which SpeechOcean762 a run read: the dataset's revision and its label release, stated, resolved and checked.

The corpus's labels exist in two releases (docs/data.md):
- `original`: the release of 2021 that the paper describes; its mispronunciation labels use 46 units, among them the
  six L2 phones IR, AR, TR, DZ, TS, DR;
- `2024`: the relabelling merged into the corpus repository on 2024-07-16 (jimbozhang/speechocean762 PR #13, after
  issue #10 asked what the L2 phones were), which replaced the L2 phones by CMU phones. According to the same issue,
  the hub copy (mispeech/speechocean762) took these labels on 2026-04-30, under the same name.

A hub read is pinned to a commit (`data.revision`); `data.labels` states the release, and the reader holds the labels
it reads to that statement (`check_label_release`). The resolved identity goes into every record of a run.
"""

from __future__ import annotations

import functools
import logging
import re

from apa.data.records import L2_PHONES
from apa.errors import UserError

log = logging.getLogger(__name__)

LABEL_RELEASES = ("original", "2024")
# mispeech/speechocean762 at a commit of its original labels: the revision the hub's dataset viewer served on
# 2025-04-15 (a public cached-asset address `.../mispeech/speechocean762/--/<commit>/--/default/test/0/audio/...`
# with a signed expiry of 1744734808, i.e. 2025-04-15; the same commit is pinned in public code of that time), a year
# before the hub took the 2024 labels (2026-04-30). The paper (arXiv 2509.02915, September 2025) reports the
# original labels' 46-unit inventory.
ORIGINAL_LABELS_COMMIT = "f95618ea1353303f34cf186b9c310fa2c1eb02c8"
# `labels=original` on a split with at least this many mispronunciation labels, none of them an L2 phone, is refused:
# the original release uses L2 phones throughout the corpus (issue #10 found them), the 2024 one none. Below it (a
# data.limit subset, the bundled 40-utterance sample) their absence proves nothing and is only logged.
ORIGINAL_MIN_MISPRONUNCIATIONS = 500

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
CHOOSE = (f"data.revision={ORIGINAL_LABELS_COMMIT} data.labels=original (the labels the paper used; the default), or "
          "data.revision=<a commit of the 2024 relabelling> data.labels=2024")


class LabelReleaseError(UserError, ValueError):
    """The data's stated label release is missing, unknown, or contradicted by the labels read."""


def check_labels_statement(labels) -> str:
    if labels is None or str(labels) not in LABEL_RELEASES:
        raise LabelReleaseError(
            f"data.labels={labels}: state which SpeechOcean762 label release the data holds, original (2021, with the "
            "L2 phones IR AR TR DZ TS DR; the paper's) or 2024 (the relabelling without them)")
    return str(labels)


@functools.cache
def _hub_commit(hub_id: str, revision: str) -> str:
    from huggingface_hub import HfApi

    try:
        return HfApi().dataset_info(hub_id, revision=revision).sha
    except Exception as err:  # offline, unknown revision, no such dataset: all end the same way
        raise LabelReleaseError(f"data.revision={revision} of {hub_id} cannot be resolved to a commit ({err}). Pin a "
                                f"commit instead: {CHOOSE}") from err


def _on_the_hub(data_cfg) -> bool:
    """data.source=hub with a hub id (not a local folder of the hub's parquet files, which has no revisions)."""
    from pathlib import Path

    hub_id = str(data_cfg.get("hub_id") or "")
    return data_cfg.get("source") == "hub" and not Path(hub_id).expanduser().exists() and hub_id.count("/") == 1


def check_data_statement(data_cfg) -> None:
    """Before anything is read or downloaded: the label release is stated, and a hub read names its revision."""
    check_labels_statement(data_cfg.get("labels"))
    if _on_the_hub(data_cfg) and not data_cfg.get("revision"):
        raise LabelReleaseError(
            f"data.revision is not set: {data_cfg.get('hub_id')}'s main branch changed from the original labels to "
            f"the 2024 relabelling on 2026-04-30 under the same name, so an unpinned read says nothing of what it "
            f"read. Choose: {CHOOSE}")


def dataset_identity(data_cfg) -> dict:
    """What names the data a run reads: {name, source, labels} plus, for the hub, hub_id and the revision as a commit
    id; for a folder, its path. Refuses a hub read without a revision (the hub's main branch changed labels under the
    same name) and an unknown label statement."""
    check_data_statement(data_cfg)
    identity = {"name": data_cfg.get("name"), "source": data_cfg.get("source"), "labels": str(data_cfg.get("labels"))}
    if _on_the_hub(data_cfg):
        revision, hub_id = str(data_cfg.get("revision")), data_cfg.get("hub_id")
        identity.update(hub_id=hub_id, revision=revision if _COMMIT.match(revision) else _hub_commit(hub_id, revision))
    elif data_cfg.get("source") == "hub":  # a local folder of the hub's parquet files: no revision to record
        identity.update(hub_id=data_cfg.get("hub_id"), revision=None)
    else:
        identity["path"] = data_cfg.get("path")
        if data_cfg.get("source") == "local":
            identity["content"] = corpus_digest(data_cfg.get("path"))
    return identity


def corpus_digest(path) -> str | None:
    """SHA-256 (16 hex digits) over a local corpus's labels and indexes: resource/scores.json and each split's
    text, wav.scp and utt2spk (the audio is not read). What makes two copies the same data wherever they lie, and
    an edited copy another one (None when the folder holds none of them)."""
    import hashlib
    from pathlib import Path

    root = Path(str(path)) if path else None
    if root is None or not root.is_dir():
        return None
    files = [root / "resource" / "scores.json"] + sorted(
        f for split in root.iterdir() if split.is_dir() for f in (split / n for n in ("text", "wav.scp", "utt2spk")))
    digest, found = hashlib.sha256(), False
    for file in files:
        if file.is_file():
            digest.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes() + b"\0")
            found = True
    return digest.hexdigest()[:16] if found else None


def same_dataset(recorded: dict | None, now: dict | None) -> bool:
    """Whether two dataset identities name the same data: for local copies whose contents were digested, by content
    (a corpus moved or copied elsewhere is the same data; one edited in place is not); otherwise field by field (a
    record of an older version, without the digest, is compared without it)."""
    if not recorded or not now:
        return recorded == now
    if recorded.get("content") and now.get("content"):
        return {k: v for k, v in recorded.items() if k != "path"} == {k: v for k, v in now.items() if k != "path"}
    return ({k: v for k, v in recorded.items() if k != "content"} == {k: v for k, v in now.items() if k != "content"})


def describe(identity: dict | None) -> str:
    """One line for tables and cards: `speechocean762 (hub mispeech/speechocean762 @ f95618ea13, original labels)`."""
    if not identity:
        return "not recorded (a run of an older version)"
    if identity.get("source") == "hub" and identity.get("revision"):
        where = f"hub {identity.get('hub_id')} @ {str(identity.get('revision'))[:10]}"
    elif identity.get("source") == "hub":
        where = f"hub files in {identity.get('hub_id')}"
    else:
        content = identity.get("content")
        where = f"{identity.get('source')} {identity.get('path')}" + (f", labels {content[:8]}" if content else "")
    return f"{identity.get('name')} ({where}, {identity.get('labels')} labels)"


def l2_label_count(utterances) -> tuple[int, int]:
    """(mispronunciation labels, of which L2 phones) over `utterances`; a distorted `IR*` counts as IR."""
    labels = [m.pronounced.removesuffix("*") for u in utterances for w in u.words for m in w.mispronunciations]
    return len(labels), sum(p in L2_PHONES for p in labels)


def check_label_release(utterances, labels: str, where: str) -> None:
    """Hold the labels read to the stated release: L2 phones under `2024` are a contradiction, and so is their
    absence under `original` once a split has ORIGINAL_MIN_MISPRONUNCIATIONS labels."""
    total, l2 = l2_label_count(utterances)
    if labels == "2024" and l2:
        raise LabelReleaseError(
            f"{where}: data.labels=2024 but {l2} of its {total} mispronunciation labels are L2 phones "
            f"({', '.join(sorted(L2_PHONES))}), which only the original release has: set data.labels=original, or "
            "point the data at the 2024 release")
    if labels == "original" and not l2:
        if total >= ORIGINAL_MIN_MISPRONUNCIATIONS:
            raise LabelReleaseError(
                f"{where}: data.labels=original but none of its {total} mispronunciation labels is an L2 phone "
                f"({', '.join(sorted(L2_PHONES))}): these are the 2024 labels. Set data.labels=2024, or read the "
                f"original release: {CHOOSE}")
        log.info("%s: %d mispronunciation labels, none an L2 phone: too few to tell the label releases apart "
                 "(data.labels=original is taken as stated)", where, total)
