"""Utterance records: the one shape every SpeechOcean762 source is turned into.

Phone inventory (docs/metrics.md, "Phone inventory"): the 39 ARPAbet phones of CMUdict, `<unk>` for a sound the
annotator could not identify, and the six L2 phones of the corpus's original release (IR, AR, TR, DZ, TS, DR) -
46 units, as the paper counts them. The corpus's 2024 revision replaced the L2 phones by CMU phones; annotations of
the original release keep them, and they stay distinct symbols here (never mapped to a CMU phone). Besides these,
an annotator's pronounced phone may be a deletion (`<del>`, `<DEL>`) or a distorted phone `X*`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

APA_ASPECTS = ("accuracy", "fluency", "prosodic", "total")
_STRESS = re.compile(r"(?<=[A-Z])[0-2](?=\*?$)")
DELETED = "<del>"  # how a record spells a deleted phone
DELETION_MARKS = {DELETED, "<DEL>"}
UNKNOWN_PHONE = "<unk>"
# The 39 ARPAbet phones of CMUdict (and of SpeechOcean762's annotation); vowels may carry a stress digit.
ARPABET = frozenset(
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z ZH".split()
)
# The L2 phones of SpeechOcean762's original release (replaced by CMU phones in its 2024 revision).
L2_PHONES = frozenset("IR AR TR DZ TS DR".split())
PHONES = ARPABET | L2_PHONES
# The inventory the paper counts: 39 ARPAbet + <unk> + 6 L2 phones
INVENTORY = PHONES | {UNKNOWN_PHONE}
assert len(INVENTORY) == 46


def is_canonical_phone(phone: str) -> bool:
    return strip_stress(phone) in PHONES


def is_pronounced_phone(phone: str) -> bool:
    """What an annotator may write for what was said: a phone, `<unk>`, a deletion, or a distorted `X*` phone."""
    return phone in DELETION_MARKS or phone == UNKNOWN_PHONE or strip_stress(phone.removesuffix("*")) in PHONES


def strip_stress(phone: str) -> str:
    """'AH0' -> 'AH', 'AH0*' -> 'AH*'. Stress digits in SpeechOcean762 are not CMUdict-faithful, so all metrics
    ignore them."""
    return _STRESS.sub("", phone)


def normalise_pronounced(phone: str) -> str:
    """A pronounced phone as records keep it: stress stripped (like canonical phones), deletions spelt `<del>`."""
    return DELETED if phone in DELETION_MARKS else strip_stress(phone)


@dataclass(frozen=True)
class Mispronunciation:
    index: int  # position of the phone inside its word
    canonical: str  # no stress digit
    pronounced: str  # no stress digit; may be '<unk>', 'X*' (distorted) or '<del>'


@dataclass(frozen=True)
class Word:
    text: str
    phones: tuple[str, ...]  # canonical, with stress digits as annotated
    mispronunciations: tuple[Mispronunciation, ...] = ()

    def phone_truth(self) -> list[str]:
        """Per canonical phone (stress stripped), what was said there: the phone itself, its annotated substitute,
        or `<del>`. SpeechOcean762 annotates no insertions, so this covers every position."""
        spoken = [strip_stress(p) for p in self.phones]
        for m in self.mispronunciations:
            spoken[m.index] = m.pronounced
        return spoken

    def pronounced_phones(self) -> list[str]:
        """Canonical phones (stress stripped) with the annotated mispronunciations applied."""
        return [p for p in self.phone_truth() if p not in DELETION_MARKS]


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
    def phone_truth(self) -> list[str]:
        """Aligned with `canonical_phones`: what was said at each canonical phone (a phone, `<unk>`, `X*`, `<del>`)."""
        return [p for w in self.words for p in w.phone_truth()]

    @property
    def annotated_phones(self) -> list[str]:
        """What the speaker actually said, phone by phone: the MDD target."""
        return [p for w in self.words for p in w.pronounced_phones()]
