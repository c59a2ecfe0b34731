"""A configured split, from any source (the original layout, the hub's parquet, a save_to_disk folder): labels read
and held to the stated label release, audio checked, skips counted against the split's tolerance.
"""

from __future__ import annotations

import logging

from apa.data.audio import AudioError, decode_audio
from apa.data.labels import DataError, SkipReport, check_label_policy
from apa.data.records import Utterance

log = logging.getLogger(__name__)


def check_audio(utterances: list[Utterance], report: SkipReport, max_seconds: float | None) -> list[Utterance]:
    """Decode every clip once; unusable ones are skipped and counted."""
    good = []
    for utt in utterances:
        try:
            decode_audio(utt.audio_path, max_seconds=max_seconds)
        except AudioError as e:
            report.skip(utt.id, e.kind, e.detail, len(utt.canonical_phones))
            continue
        good.append(utt)
    return good


def read_labels(source: str, path: str | None, split: str, report: SkipReport, hub_id: str | None = None,
                revision: str | None = None, on_label_mismatch: str = "error") -> list[Utterance]:
    """Labelled utterances of `split` from any source: local (original layout), hub (parquet), disk (save_to_disk)."""
    check_label_policy(on_label_mismatch)
    if source == "local":
        if not path:
            raise DataError("data.path is not set: give the SpeechOcean762 root folder (original layout)")
        from apa.data.original import read_original_layout

        return read_original_layout(path, split, report, on_label_mismatch)
    if source == "hub":
        from apa.data.hf_sources import read_hub

        return read_hub(hub_id or "mispeech/speechocean762", revision, split, report, on_label_mismatch)
    if source == "disk":
        from apa.data.hf_sources import read_disk

        if not path:
            raise DataError("data.path is not set: give the datasets.save_to_disk folder")
        return read_disk(path, split, report, on_label_mismatch)
    raise DataError(f"data.source={source!r} is unknown: use local (data.path=<corpus root>), hub (data.hub_id) "
                    "or disk (data.path=<save_to_disk folder>)")


TEST_TOLERANCE_OPTION = "data.max_bad_fraction_test"


def load_split(
    source: str,
    path: str | None,
    split: str,
    *,
    max_bad_fraction: float,
    max_audio_seconds: float | None = None,
    limit: int | None = None,
    decode: bool = True,
    hub_id: str | None = None,
    revision: str | None = None,
    on_label_mismatch: str = "error",
    tolerance_option: str = "data.max_bad_fraction",
    report: SkipReport | None = None,
    labels: str | None = None,
) -> list[Utterance]:
    """The utterances of `split`, checked; stops when more than `max_bad_fraction` of them are unusable (the message
    names `tolerance_option`, the option that sets it). `decode=False` reads labels only (for label statistics such
    as training-set means). `report`, if given, receives the counts: the split's utterances and canonical phones,
    and what was skipped; with `limit` the split is its first utterances up to the `limit`-th labelled one, so that
    the skips while reading and those of the audio check share one count of utterances. `labels`, the stated label
    release (original | 2024), is checked against the whole split's labels."""
    from apa.data.release import check_label_release

    report = report if report is not None else SkipReport()
    utterances = read_labels(source, path, split, report, hub_id, revision, on_label_mismatch)
    if labels is not None:
        check_label_release(utterances, labels, f"{split} split of {path or hub_id}")
    if limit and limit < len(utterances):  # a demo or test subset: the first `limit` labelled utterances
        labelled = len(utterances)
        forgotten = report.keep_first(limit)  # the split is now its utterances up to those, skips among them counted
        log.info("%s split: using the first %d of %d labelled utterances (data.limit): the split's first %d, whose "
                 "skips are counted%s", split, limit, labelled, report.total,
                 f"; {forgotten} skipped after them not counted" if forgotten else "")
        utterances = utterances[:limit]
        report.phones = sum(len(u.canonical_phones) for u in utterances) + report.skipped_phones
    if decode:
        utterances = check_audio(utterances, report, max_audio_seconds)
    log.info("%s split: %s", split, report.summary())
    if report.total and report.skipped / report.total > max_bad_fraction:
        why = (" (the test split's default: metrics over part of the test set are not those of the test set)"
               if tolerance_option == TEST_TOLERANCE_OPTION and max_bad_fraction == 0 else "")
        ids = ", ".join(report.ids[:20]) + (" ..." if len(report.ids) > 20 else "")
        raise DataError(
            f"{split} split: {report.summary()}. That is more than {tolerance_option}={max_bad_fraction}{why}; "
            f"fix the data, or allow it explicitly by raising {tolerance_option} (the counts are logged and "
            f"recorded). Skipped: {ids}"
        )
    if not utterances:
        raise DataError(f"{split} split of {path or hub_id} has no usable utterances")
    return utterances


def load_configured_split(data_cfg, split: str, decode: bool = True,
                          report: SkipReport | None = None) -> list[Utterance]:
    """`load_split` driven by the `data` config node. The test split (`data.test_split`) has its own tolerance,
    `data.max_bad_fraction_test` (default 0: no utterance may be skipped unless the user allows it)."""
    from apa.data.release import dataset_identity

    is_test = split == data_cfg.test_split
    identity = dataset_identity(data_cfg)  # refuses an unpinned hub read or an unstated label release
    tolerance = data_cfg.max_bad_fraction_test if is_test else data_cfg.max_bad_fraction
    return load_split(
        data_cfg.source,
        data_cfg.path,
        split,
        max_bad_fraction=tolerance if decode else 1.0,
        max_audio_seconds=data_cfg.max_audio_seconds,
        limit=data_cfg.limit if decode else None,
        decode=decode,
        hub_id=data_cfg.get("hub_id"),
        revision=identity.get("revision"),
        on_label_mismatch=data_cfg.on_label_mismatch,
        tolerance_option=TEST_TOLERANCE_OPTION if is_test else "data.max_bad_fraction",
        report=report,
        labels=identity["labels"],
    )
