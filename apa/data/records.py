"""Utterance records: the one shape every SpeechOcean762 source is turned into."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

APA_ASPECTS = ("accuracy", "fluency", "prosodic", "total")
_STRESS = re.compile(r"(?<=[A-Z])[0-2]$")
DELETION_MARKS = {"<del>", "<DEL>"}
UNKNOWN_PHONE = "<unk>"
# The 39 ARPAbet phones of CMUdict (and of SpeechOcean762's annotation); vowels may carry a stress digit.
ARPABET = frozenset(
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z ZH".split()
)


def is_canonical_phone(phone: str) -> bool:
    return strip_stress(phone) in ARPABET


def is_pronounced_phone(phone: str) -> bool:
    """What an annotator may write for what was said: a phone, `<unk>`, a deletion, or a distorted `X*` phone."""
    return phone in DELETION_MARKS or phone == UNKNOWN_PHONE or strip_stress(phone.removesuffix("*")) in ARPABET


def strip_stress(phone: str) -> str:
    """'AH0' -> 'AH'. Stress digits in SpeechOcean762 are not CMUdict-faithful, so all metrics ignore them."""
    return _STRESS.sub("", phone)


@dataclass(frozen=True)
class Mispronunciation:
    index: int  # position of the phone inside its word
    canonical: str
    pronounced: str  # no stress digit; may be '<unk>', 'X*' (distorted) or '<del>'


@dataclass(frozen=True)
class Word:
    text: str
    phones: tuple[str, ...]  # canonical, with stress digits as annotated
    mispronunciations: tuple[Mispronunciation, ...] = ()

    def pronounced_phones(self) -> list[str]:
        """Canonical phones (stress stripped) with the annotated mispronunciations applied."""
        spoken = [strip_stress(p) for p in self.phones]
        for m in self.mispronunciations:
            spoken[m.index] = m.pronounced
        return [p for p in spoken if p not in DELETION_MARKS]


@dataclass(frozen=True)
class Utterance:
    id: str
    speaker: str
    audio_path: str
    text: str
    scores: dict[str, int]  # accuracy, fluency, prosodic, total (0-10)
    words: tuple[Word, ...] = field(default_factory=tuple)

    @property
    def canonical_phones(self) -> list[str]:
        return [strip_stress(p) for w in self.words for p in w.phones]

    @property
    def annotated_phones(self) -> list[str]:
        """What the speaker actually said, phone by phone: the MDD target."""
        return [p for w in self.words for p in w.pronounced_phones()]
