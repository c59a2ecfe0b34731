"""Read SpeechOcean762 in the corpus's original layout into utterance records.

Layout (github.com/jimbozhang/speechocean762, and the bundled sample):
    WAVE/SPEAKERxxxx/<id>.WAV
    train/ and test/: wav.scp, text, utt2spk (Kaldi files; wav.scp paths relative to the corpus root)
    resource/scores.json: utt id -> {text, accuracy, fluency, prosodic, total, words: [...]}
"""

from __future__ import annotations

import codecs
import json
import logging
import numbers
import random
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from apa.data.audio import AudioError, decode_audio
from apa.data.records import (
    APA_ASPECTS,
    Mispronunciation,
    Utterance,
    Word,
    is_canonical_phone,
    is_pronounced_phone,
    normalise_pronounced,
    strip_stress,
)
from apa.errors import UserError

log = logging.getLogger(__name__)


class DataError(UserError, ValueError):
    """The data cannot be used as configured; the message names the cause and the fix."""


class LabelMismatch(ValueError):
    """A mispronunciation whose `index` does not point at its `canonical-phone`: its position cannot be trusted."""


LABEL_MISMATCH = "mispronunciation index does not match canonical-phone"
ON_LABEL_MISMATCH = ("error", "skip")


@dataclass
class SkipReport:
    """Counts of utterances left out, by reason, so that no data loss is silent; and the size of the split they were
    left out of (`total` utterances, `phones`: canonical phones of those whose annotation could be read)."""

    total: int = 0
    phones: int = 0
    skipped_phones: int = 0
    reasons: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)  # the skipped utterances, in order

    def skip(self, utt_id: str, kind: str, detail: str = "", phones: int = 0) -> None:
        self.reasons[kind] += 1
        self.ids.append(utt_id)
        self.skipped_phones += phones
        self.examples.setdefault(kind, f"{utt_id}{': ' + detail if detail else ''}")
        log.warning("skipping %s: %s %s", utt_id, kind, detail)

    @property
    def skipped(self) -> int:
        return sum(self.reasons.values())

    def as_dict(self) -> dict:
        return {"utterances_in_split": self.total, "utterances_skipped": self.skipped,
                "phones_in_split": self.phones, "phones_skipped": self.skipped_phones,
                "skipped_by_reason": dict(self.reasons), "skipped_examples": dict(self.examples),
                "skipped_ids": list(self.ids)}

    def summary(self) -> str:
        if not self.skipped:
            return f"all {self.total} utterances usable"
        parts = ", ".join(f"{n} {reason} (e.g. {self.examples[reason]})" for reason, n in self.reasons.items())
        return f"skipped {self.skipped} of {self.total} utterances: {parts}"


def read_corpus_text(path: Path) -> str:
    """A text file of the corpus as UTF-8 (whatever the locale), a byte order mark at its start accepted; bytes that are
    not UTF-8 stop the run naming `path:line`, the byte offset and the byte."""
    data = path.read_bytes()
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        offset = bom + e.start
        line = data.count(b"\n", 0, offset) + 1
        column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 at byte offset {offset} (byte {column} of the line: "
                        f"0x{data[offset]:02x}, {e.reason}); the corpus files are UTF-8: re-save this one as UTF-8"
                        ) from None


def _read_kaldi_map(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise DataError(f"{path} not found: data.path must point at the corpus root (WAVE/, train/, test/, resource/)")
    out: dict[str, str] = {}
    # lines end at "\n" only (as Kaldi reads them), so that line numbers are an editor's; "\r" is stripped with the
    # other whitespace
    for n, line in enumerate(read_corpus_text(path).split("\n"), 1):
        fields = line.split(maxsplit=1)  # Kaldi: "<id> <value>", space or tab separated
        if not fields:
            continue
        if fields[0] in out:
            raise DataError(f"{path}:{n}: duplicate id {fields[0]}")
        out[fields[0]] = fields[1].strip() if len(fields) > 1 else ""
    return out


def _parse_word(raw: dict, utt_id: str = "", position: int = 0) -> Word:
    # every field is checked for its type, so that any damaged entry is a bad label (TypeError/ValueError), skipped
    # and counted, never a crash or a value coerced into another
    if not isinstance(raw, dict):
        raise TypeError(f"word {position} is a {type(raw).__name__}, not an object")
    text = raw["text"]
    if not isinstance(text, str):
        raise TypeError(f"word {position}: text {text!r} is not a string")
    phones = raw["phones"]
    if not isinstance(phones, (list, tuple)) or not all(isinstance(p, str) for p in phones):
        raise TypeError(f"word {text!r}: phones {phones!r} is not a list of phone symbols")
    phones = tuple(phones)
    unknown = [p for p in phones if not is_canonical_phone(p)]
    if unknown:  # a typo in the labels would otherwise become a target the model is taught
        raise ValueError(f"unknown phone symbol {unknown[0]!r} in word {text!r}")
    listed = raw.get("mispronunciations") or []
    if not isinstance(listed, (list, tuple)):
        raise TypeError(f"word {text!r}: mispronunciations {listed!r} is not a list")
    mis = []
    for m in listed:
        if not isinstance(m, dict):
            raise TypeError(f"word {text!r}: mispronunciation {m!r} is not an object")
        index, pronounced, canonical = m["index"], m["pronounced-phone"], m["canonical-phone"]
        if not _is_integral(index):  # int() would turn 1.5 into 1 and true into 1; infinity would not convert
            raise ValueError(f"mispronunciation index {index!r} in word {text!r} is not an integer")
        index = int(index)
        if not 0 <= index < len(phones):
            raise ValueError(f"mispronunciation index {index} outside word {text!r}")
        if not isinstance(pronounced, str) or not is_pronounced_phone(pronounced):
            raise ValueError(f"unknown phone symbol {pronounced!r} in word {text!r}")
        if not isinstance(canonical, str):
            raise ValueError(f"canonical-phone {canonical!r} in word {text!r} is not a phone symbol")
        canonical = strip_stress(canonical)
        if strip_stress(phones[index]) != canonical:  # the per-phone MDD truth relies on the index
            raise LabelMismatch(
                f"utterance {utt_id}, word {text!r} (word index {position}: {' '.join(phones)}): "
                f"mispronunciation index {index} points at {strip_stress(phones[index])!r}, but its canonical-phone "
                f"is {canonical!r}")
        mis.append(Mispronunciation(index=index, canonical=canonical, pronounced=normalise_pronounced(pronounced)))
    return Word(text=text, phones=phones, mispronunciations=tuple(mis))


def _is_integral(value) -> bool:
    """An integer, or a float with no fractional part (parquet may hold scores as 7.0); never a bool or a string."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return isinstance(value, numbers.Integral) or float(value).is_integer()


def _score(aspect: str, value) -> int:
    """An APA score as annotated: an integer 0-10. Nothing is rounded or coerced (6.5, true, "7" are refused)."""
    if not _is_integral(value):
        raise ValueError(f"score {aspect}={value!r} is not an integer 0-10")
    if not 0 <= value <= 10:
        raise ValueError(f"score {aspect}={value!r} outside 0-10")
    return int(value)


def parse_labels(utt_id: str, entry: dict, speaker: str, audio_path: str) -> Utterance:
    """One scores.json entry -> Utterance; raises ValueError, TypeError or KeyError naming the bad field, which
    `read_entry` counts as bad labels (LabelMismatch, a ValueError, for a mispronunciation index that does not point
    at its canonical phone). Nothing else escapes, whatever JSON the entry holds (tests/test_properties.py)."""
    if not isinstance(entry, dict):
        raise TypeError(f"the entry is a {type(entry).__name__}, not an object")
    scores = {}
    for aspect in APA_ASPECTS:
        if aspect not in entry:
            raise ValueError(f"missing score field {aspect!r}")
        scores[aspect] = _score(aspect, entry[aspect])
    # NFC: the same word typed with combining accents or precomposed gives the same tokens and the same WER words
    text = entry.get("text", "")
    if not isinstance(text, str):
        raise TypeError(f"text {text!r} is not a string")
    text = unicodedata.normalize("NFC", text).strip()
    if not text:
        raise ValueError("empty text")
    listed = entry.get("words", [])
    if not isinstance(listed, (list, tuple)):
        raise TypeError(f"words {listed!r} is not a list")
    words = tuple(_parse_word(w, utt_id, n) for n, w in enumerate(listed))
    if not words:
        raise ValueError("no word annotations")
    return Utterance(id=utt_id, speaker=speaker, audio_path=audio_path, text=text, scores=scores, words=words)


def _count_phones(entry) -> int:
    """Canonical phones of a scores.json entry, as far as it can be read (0 where it cannot)."""
    try:
        return sum(len(w["phones"]) for w in entry["words"])
    except (KeyError, TypeError):
        return 0


def check_label_policy(on_label_mismatch: str) -> None:
    if on_label_mismatch not in ON_LABEL_MISMATCH:
        raise DataError(f"data.on_label_mismatch={on_label_mismatch!r} is unknown: use error (stop, the default) or "
                        "skip (leave such utterances out, counted)")


def read_entry(utt_id: str, entry: dict, speaker: str, audio_path: str, report: SkipReport,
               on_label_mismatch: str = "error") -> Utterance | None:
    """`parse_labels`, with the entry counted in `report`: bad labels are skipped and counted; a mispronunciation
    index that does not match its canonical phone stops the run (on_label_mismatch=error) or is skipped, counted."""
    phones = _count_phones(entry)
    report.phones += phones
    try:
        return parse_labels(utt_id, entry, speaker, audio_path)
    except LabelMismatch as e:
        if on_label_mismatch != "skip":
            raise DataError(f"{e}. The annotation's position of a mispronunciation is what MDD is scored against; "
                            "fix the labels, or leave such utterances out (counted) with data.on_label_mismatch=skip"
                            ) from e
        report.skip(utt_id, LABEL_MISMATCH, str(e), phones)
    except (KeyError, TypeError, ValueError) as e:
        report.skip(utt_id, "bad labels", str(e), phones)
    return None


def read_scores(path: Path) -> dict:
    """resource/scores.json: utt id -> entry. Not JSON stops the run naming the file, line and column; so do a
    top level that is not an object and an utterance id given twice (JSON keeps the last one silently)."""
    objects_with_duplicates: list[tuple[int, list[str]]] = []
    calls = 0

    def pairs(items: list[tuple[str, object]]) -> dict:
        nonlocal calls
        calls += 1
        out = dict(items)
        if len(out) < len(items):
            counts = Counter(key for key, _ in items)
            objects_with_duplicates.append((calls, [key for key, n in counts.items() if n > 1]))
        return out

    try:
        labels = json.loads(read_corpus_text(path), object_pairs_hook=pairs)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg}, line {e.lineno} column {e.colno}): "
                        "fix the file, or fetch the corpus's scores.json again") from None
    if not isinstance(labels, dict):
        raise DataError(f"{path} holds a JSON {type(labels).__name__}, not an object of utterance id -> labels")
    top = [keys for call, keys in objects_with_duplicates if call == calls]  # the top level is the last object closed
    if top:
        shown = ", ".join(top[0][:10]) + (" ..." if len(top[0]) > 10 else "")
        raise DataError(f"{path}: utterance id(s) given more than once: {shown}; JSON would keep the last silently: "
                        "keep one entry per utterance")
    return labels


def read_original_layout(root: str | Path, split: str, report: SkipReport,
                         on_label_mismatch: str = "error") -> list[Utterance]:
    """Utterances of one split; entries with bad labels are skipped and counted in `report`."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data.path={root} is not a folder: point it at a SpeechOcean762 copy in the original layout")
    wavs = _read_kaldi_map(root / split / "wav.scp")
    speakers = _read_kaldi_map(root / split / "utt2spk") if (root / split / "utt2spk").is_file() else {}
    scores_path = root / "resource" / "scores.json"
    if not scores_path.is_file():
        raise DataError(f"{scores_path} not found: the original layout keeps the labels in resource/scores.json")
    labels = read_scores(scores_path)
    out = []
    for utt_id, rel in wavs.items():
        report.total += 1
        if utt_id not in labels:
            report.skip(utt_id, "id in wav.scp but not in scores.json")
            continue
        utt = read_entry(utt_id, labels[utt_id], speakers.get(utt_id, ""), str(root / rel), report, on_label_mismatch)
        if utt is not None:
            out.append(utt)
    return out


def check_audio(utterances: list[Utterance], report: SkipReport, max_seconds: float | None) -> list[Utterance]:
    """Decode every clip once; unusable ones are skipped and counted."""
    good = []
    for utt in utterances:
        try:
            decode_audio(utt.audio_path, max_seconds=max_seconds)
        except AudioError as e:
            report.skip(utt.id, e.kind, str(e), len(utt.canonical_phones))
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
    and what was skipped; with `limit` the split is the limited subset (plus the utterances skipped for their
    labels). `labels`, the stated label release (original | 2024), is checked against the whole split's labels."""
    from apa.data.release import check_label_release

    report = report if report is not None else SkipReport()
    utterances = read_labels(source, path, split, report, hub_id, revision, on_label_mismatch)
    if labels is not None:
        check_label_release(utterances, labels, f"{split} split of {path or hub_id}")
    if limit and limit < len(utterances):  # a demo or test subset: the first `limit` labelled utterances
        log.info("%s split: using the first %d of %d labelled utterances (data.limit)", split, limit, len(utterances))
        utterances = utterances[:limit]
        report.total = len(utterances) + report.skipped
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
    # .get: run folders saved before these keys existed
    tolerance = data_cfg.get("max_bad_fraction_test", 0.0) if is_test else data_cfg.max_bad_fraction
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
        on_label_mismatch=data_cfg.get("on_label_mismatch", "error"),
        tolerance_option=TEST_TOLERANCE_OPTION if is_test else "data.max_bad_fraction",
        report=report,
        labels=identity["labels"],
    )


def split_by_speaker(utterances: list[Utterance], fraction: float,
                     seed: int) -> tuple[list[Utterance], list[Utterance]]:
    """(train, validation): whole speakers held out, picked in a seeded order until `fraction` of the utterances are,
    so validation loss measures generalisation to new voices rather than to new sentences of known ones."""
    counts = Counter(u.speaker for u in utterances)
    if len(counts) < 2:
        raise DataError(f"data.validation_fraction={fraction} needs at least 2 speakers in the training split; "
                        f"found {len(counts)}: set it to 0 (no validation split)")
    speakers = sorted(counts)
    random.Random(seed).shuffle(speakers)
    held, n_held = set(), 0
    for speaker in speakers[:-1]:  # at least one speaker always stays in training
        if n_held >= fraction * len(utterances):
            break
        held.add(speaker)
        n_held += counts[speaker]
    log.info("validation split: %d of %d speakers held out (%d utterances)", len(held), len(counts), n_held)
    return [u for u in utterances if u.speaker not in held], [u for u in utterances if u.speaker in held]
