"""SpeechOcean762 labels into Utterance records, and the policy for what cannot be used: every label field is checked
for its type and range; a bad entry is skipped and counted (SkipReport), never coerced or silently dropped.
"""

from __future__ import annotations

import logging
import numbers
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class Skip:
    """One utterance left out: where in its split (`place`: how many utterances had been counted with it), why."""

    place: int
    id: str
    kind: str
    detail: str = ""
    phones: int = 0


@dataclass
class SkipReport:
    """Counts of utterances left out, by reason, so that no data loss is silent; and the size of the split they were
    left out of (`total` utterances, `phones`: canonical phones of those whose annotation could be read)."""

    total: int = 0
    phones: int = 0
    entries: list[Skip] = field(default_factory=list)  # in the order they were counted

    def skip(self, utt_id: str, kind: str, detail: str = "", phones: int = 0) -> None:
        self.entries.append(Skip(self.total, utt_id, kind, detail, phones))
        log.warning("skipping %s: %s %s", utt_id, kind, detail)

    def keep_first(self, usable: int) -> int:
        """The split cut down to its first utterances up to the `usable`-th one not skipped so far (data.limit): the
        skips among them stay counted, later ones are forgotten, and `total` becomes their number, so that every skip
        of the split, while reading or later, is counted out of the same utterances. Returns how many were forgotten."""
        considered = usable
        for place in sorted(s.place for s in self.entries):
            if place > considered:
                break
            considered += 1  # a skip inside the prefix: one more utterance read to reach `usable` kept ones
        kept = [s for s in self.entries if s.place <= considered]
        forgotten, self.entries, self.total = len(self.entries) - len(kept), kept, considered
        return forgotten

    @property
    def reasons(self) -> Counter:
        return Counter(s.kind for s in self.entries)

    @property
    def examples(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for s in self.entries:
            out.setdefault(s.kind, f"{s.id}{': ' + s.detail if s.detail else ''}")
        return out

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.entries]

    @property
    def skipped_phones(self) -> int:
        return sum(s.phones for s in self.entries)

    @property
    def skipped(self) -> int:
        return len(self.entries)

    def as_dict(self) -> dict:
        return {"utterances_in_split": self.total, "utterances_skipped": self.skipped,
                "phones_in_split": self.phones, "phones_skipped": self.skipped_phones,
                "skipped_by_reason": dict(self.reasons), "skipped_examples": dict(self.examples),
                "skipped_ids": list(self.ids)}

    def summary(self) -> str:
        if not self.skipped:
            return f"all {self.total} utterances usable"
        examples = self.examples
        parts = ", ".join(f"{n} {reason} (e.g. {examples[reason]})" for reason, n in self.reasons.items())
        return f"skipped {self.skipped} of {self.total} utterances: {parts}"


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
    if not phones:  # its MDD target would say nothing was there; its APA target scores it
        raise ValueError(f"word {position} ({text!r}) has no phones")
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
        if any(earlier.index == index for earlier in mis):  # two truths for one phone: neither can be scored against
            raise LabelMismatch(
                f"utterance {utt_id}, word {text!r} (word index {position}: {' '.join(phones)}): two mispronunciation "
                f"entries at index {index} ({phones[index]})")
        mis.append(Mispronunciation(index=index, canonical=canonical, pronounced=normalise_pronounced(pronounced)))
    return Word(text=text, phones=phones, mispronunciations=tuple(mis))


def _word_tokens(text: str) -> list[str]:
    """Words as the text and the word annotations are compared: upper case, punctuation but apostrophes dropped.
    Symbols (an emoji, `&`) stay: a text holding one that no word annotation spells is not what was annotated."""
    return "".join(" " if unicodedata.category(c)[0] in "PZC" and c != "'" else c for c in text.upper()).split()


def clean_text(text: str) -> str:
    """The sentence as prompted and as the MDD target's words: NFC (combining accents and precomposed letters give
    the same tokens), invisible format characters (zero-width space, BOM, soft hyphen) removed, and any run of
    whitespace (tabs, double spaces, newlines) one space, so that no invisible character becomes part of a word."""
    text = "".join(c for c in unicodedata.normalize("NFC", text) if unicodedata.category(c) != "Cf")
    return " ".join(text.split())


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
    text = clean_text(text)
    if not text:
        raise ValueError("empty text")
    listed = entry.get("words", [])
    if not isinstance(listed, (list, tuple)):
        raise TypeError(f"words {listed!r} is not a list")
    words = tuple(_parse_word(w, utt_id, n) for n, w in enumerate(listed))
    if not words:
        raise ValueError("no word annotations")
    spelled = _word_tokens(text)
    said = [token for w in words for token in _word_tokens(clean_text(w.text))]
    if spelled != said:  # the MDD target's words and phones would contradict the prompted sentence
        raise ValueError(f"the words {' '.join(w.text for w in words)!r} do not spell the text {text!r}")
    return Utterance(id=utt_id, speaker=speaker, audio_path=audio_path, text=text, scores=scores, words=words)


def _count_phones(entry) -> int:
    """Canonical phones of a scores.json entry, as far as it can be read (0 where it cannot)."""
    try:
        return sum(len(w["phones"]) for w in entry["words"])
    except (KeyError, TypeError):
        return 0


def skip_entry(report: SkipReport, utt_id: str, entry, kind: str, detail: str) -> None:
    """Skip an utterance for a reason other than its labels (`entry`, its scores.json entry, or None): its phones
    count in the split and among the skipped ones, as an audio skip's do."""
    phones = _count_phones(entry)
    report.phones += phones
    report.skip(utt_id, kind, detail, phones)


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
