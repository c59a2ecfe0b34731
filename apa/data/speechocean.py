"""Read SpeechOcean762 in the corpus's original layout into utterance records.

Layout (github.com/jimbozhang/speechocean762, and the bundled sample):
    WAVE/SPEAKERxxxx/<id>.WAV
    train/ and test/: wav.scp, text, utt2spk (Kaldi files; wav.scp paths relative to the corpus root)
    resource/scores.json: utt id -> {text, accuracy, fluency, prosodic, total, words: [...]}
"""

from __future__ import annotations

import json
import logging
import random
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from apa.data.audio import AudioError, decode_audio
from apa.data.records import APA_ASPECTS, Mispronunciation, Utterance, Word, is_canonical_phone, is_pronounced_phone
from apa.errors import UserError

log = logging.getLogger(__name__)


class DataError(UserError, ValueError):
    """The data cannot be used as configured; the message names the cause and the fix."""


@dataclass
class SkipReport:
    """Counts of utterances left out, by reason, so that no data loss is silent."""

    total: int = 0
    reasons: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def skip(self, utt_id: str, kind: str, detail: str = "") -> None:
        self.reasons[kind] += 1
        self.examples.setdefault(kind, f"{utt_id}{': ' + detail if detail else ''}")
        log.warning("skipping %s: %s %s", utt_id, kind, detail)

    @property
    def skipped(self) -> int:
        return sum(self.reasons.values())

    def summary(self) -> str:
        if not self.skipped:
            return f"all {self.total} utterances usable"
        parts = ", ".join(f"{n} {reason} (e.g. {self.examples[reason]})" for reason, n in self.reasons.items())
        return f"skipped {self.skipped} of {self.total} utterances: {parts}"


def _read_kaldi_map(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise DataError(f"{path} not found: data.path must point at the corpus root (WAVE/, train/, test/, resource/)")
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split(maxsplit=1)  # Kaldi: "<id> <value>", space or tab separated
        if not fields:
            continue
        if fields[0] in out:
            raise DataError(f"{path}:{n}: duplicate id {fields[0]}")
        out[fields[0]] = fields[1].strip() if len(fields) > 1 else ""
    return out


def _parse_word(raw: dict) -> Word:
    phones = tuple(raw["phones"])
    unknown = [p for p in phones if not is_canonical_phone(p)]
    if unknown:  # a typo in the labels would otherwise become a target the model is taught
        raise ValueError(f"unknown phone symbol {unknown[0]!r} in word {raw['text']!r}")
    mis = []
    for m in raw.get("mispronunciations") or []:
        index = int(m["index"])
        if not 0 <= index < len(phones):
            raise ValueError(f"mispronunciation index {index} outside word {raw['text']!r}")
        if not is_pronounced_phone(m["pronounced-phone"]):
            raise ValueError(f"unknown phone symbol {m['pronounced-phone']!r} in word {raw['text']!r}")
        mis.append(Mispronunciation(index=index, canonical=m["canonical-phone"], pronounced=m["pronounced-phone"]))
    return Word(text=raw["text"], phones=phones, mispronunciations=tuple(mis))


def parse_labels(utt_id: str, entry: dict, speaker: str, audio_path: str) -> Utterance:
    """One scores.json entry -> Utterance; raises ValueError naming the bad field."""
    scores = {}
    for aspect in APA_ASPECTS:
        if aspect not in entry:
            raise ValueError(f"missing score field {aspect!r}")
        value = entry[aspect]
        if not isinstance(value, (int, float)) or not 0 <= value <= 10:
            raise ValueError(f"score {aspect}={value!r} outside 0-10")
        scores[aspect] = int(round(value))
    # NFC: the same word typed with combining accents or precomposed gives the same tokens and the same WER words
    text = unicodedata.normalize("NFC", str(entry.get("text", ""))).strip()
    if not text:
        raise ValueError("empty text")
    words = tuple(_parse_word(w) for w in entry.get("words", []))
    if not words:
        raise ValueError("no word annotations")
    return Utterance(id=utt_id, speaker=speaker, audio_path=audio_path, text=text, scores=scores, words=words)


def read_original_layout(root: str | Path, split: str, report: SkipReport) -> list[Utterance]:
    """Utterances of one split; entries with bad labels are skipped and counted in `report`."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data.path={root} is not a folder: point it at a SpeechOcean762 copy in the original layout")
    wavs = _read_kaldi_map(root / split / "wav.scp")
    speakers = _read_kaldi_map(root / split / "utt2spk") if (root / split / "utt2spk").is_file() else {}
    scores_path = root / "resource" / "scores.json"
    if not scores_path.is_file():
        raise DataError(f"{scores_path} not found: the original layout keeps the labels in resource/scores.json")
    labels = json.loads(scores_path.read_text())
    out = []
    for utt_id, rel in wavs.items():
        report.total += 1
        if utt_id not in labels:
            report.skip(utt_id, "id in wav.scp but not in scores.json")
            continue
        try:
            out.append(parse_labels(utt_id, labels[utt_id], speakers.get(utt_id, ""), str(root / rel)))
        except (KeyError, TypeError, ValueError) as e:
            report.skip(utt_id, "bad labels", str(e))
    return out


def check_audio(utterances: list[Utterance], report: SkipReport, max_seconds: float | None) -> list[Utterance]:
    """Decode every clip once; unusable ones are skipped and counted."""
    good = []
    for utt in utterances:
        try:
            decode_audio(utt.audio_path, max_seconds=max_seconds)
        except AudioError as e:
            report.skip(utt.id, e.kind, str(e))
            continue
        good.append(utt)
    return good


def read_labels(source: str, path: str | None, split: str, report: SkipReport, hub_id: str | None = None,
                revision: str | None = None) -> list[Utterance]:
    """Labelled utterances of `split` from any source: local (original layout), hub (parquet), disk (save_to_disk)."""
    if source == "local":
        if not path:
            raise DataError("data.path is not set: give the SpeechOcean762 root folder (original layout)")
        return read_original_layout(path, split, report)
    if source == "hub":
        from apa.data.hf_sources import read_hub

        return read_hub(hub_id or "mispeech/speechocean762", revision, split, report)
    if source == "disk":
        from apa.data.hf_sources import read_disk

        if not path:
            raise DataError("data.path is not set: give the datasets.save_to_disk folder")
        return read_disk(path, split, report)
    raise DataError(f"data.source={source!r} is unknown: use local (data.path=<corpus root>), hub (data.hub_id) "
                    "or disk (data.path=<save_to_disk folder>)")


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
) -> list[Utterance]:
    """The utterances of `split`, checked; stops when more than `max_bad_fraction` of them are unusable.
    `decode=False` reads labels only (for label statistics such as training-set means)."""
    report = SkipReport()
    utterances = read_labels(source, path, split, report, hub_id, revision)
    if limit and limit < len(utterances):  # a demo or test subset: the first `limit` labelled utterances
        log.info("%s split: using the first %d of %d labelled utterances (data.limit)", split, limit, len(utterances))
        utterances = utterances[:limit]
        report.total = len(utterances) + report.skipped
    if decode:
        utterances = check_audio(utterances, report, max_audio_seconds)
    log.info("%s split: %s", split, report.summary())
    if report.total and report.skipped / report.total > max_bad_fraction:
        raise DataError(
            f"{split} split: {report.summary()}. That is more than data.max_bad_fraction={max_bad_fraction}; "
            "fix the data or raise the threshold"
        )
    if not utterances:
        raise DataError(f"{split} split of {path or hub_id} has no usable utterances")
    return utterances


def load_configured_split(data_cfg, split: str, decode: bool = True) -> list[Utterance]:
    """`load_split` driven by the `data` config node."""
    return load_split(
        data_cfg.source,
        data_cfg.path,
        split,
        max_bad_fraction=data_cfg.max_bad_fraction if decode else 1.0,
        max_audio_seconds=data_cfg.max_audio_seconds,
        limit=data_cfg.limit if decode else None,
        decode=decode,
        hub_id=data_cfg.get("hub_id"),  # .get: run folders saved before these keys existed
        revision=data_cfg.get("revision"),
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
