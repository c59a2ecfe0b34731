"""Table 3's metrics from predictions: PCC per aspect, WER, PER, MDD (standard hierarchy) and phone recognition.

Every convention is written down with worked examples in docs/metrics.md.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Iterable

import jiwer
import numpy as np
from scipy.stats import pearsonr

from apa.data.records import APA_ASPECTS, strip_stress

_PUNCT = re.compile(f"[{re.escape(string.punctuation.replace(chr(39), ''))}]")


def normalise_words(text: str) -> str:
    """Upper-case, punctuation dropped (apostrophes kept: LET'S is one word), single spaces."""
    return " ".join(_PUNCT.sub(" ", text.upper()).split())


def normalise_phones(phones: str | Iterable[str]) -> list[str]:
    tokens = phones.split() if isinstance(phones, str) else list(phones)
    return [strip_stress(p.upper()) if p != "<unk>" else p for p in tokens]


def align(reference: list[str], hypothesis: list[str]) -> list[tuple[str | None, str | None]]:
    """Edit-distance alignment (jiwer) as (ref, hyp) pairs; None marks a deletion (hyp) or insertion (ref)."""
    if not reference:
        return [(None, h) for h in hypothesis]
    out = jiwer.process_words(" ".join(reference), " ".join(hypothesis) if hypothesis else "")
    pairs: list[tuple[str | None, str | None]] = []
    for chunk in out.alignments[0]:
        ref = reference[chunk.ref_start_idx : chunk.ref_end_idx]
        hyp = hypothesis[chunk.hyp_start_idx : chunk.hyp_end_idx]
        if chunk.type in ("equal", "substitute"):
            pairs.extend(zip(ref, hyp, strict=True))
        elif chunk.type == "delete":
            pairs.extend((r, None) for r in ref)
        else:
            pairs.extend((None, h) for h in hyp)
    return pairs


def per_canonical(canonical: list[str], other: list[str]) -> list[str | None]:
    """For each canonical phone, the phone aligned to it in `other` (None: deleted). Insertions are dropped."""
    return [hyp for ref, hyp in align(canonical, other) if ref is not None]


def _pcc(human: list[float], predicted: list[float]) -> tuple[float, float]:
    if len(human) < 2 or np.std(human) == 0 or np.std(predicted) == 0:
        return math.nan, math.nan  # undefined: constant input or too few pairs
    r, p = pearsonr(human, predicted)
    return float(r), float(p)


def apa_metrics(records: list[dict], train_means: dict[str, float]) -> dict[str, float]:
    """Pearson r per aspect over parsed answers, and over all answers with unparsed ones set to the training mean."""
    out: dict[str, float] = {}
    for aspect in APA_ASPECTS:
        parsed = [(r["reference"][aspect], r["prediction"][aspect]) for r in records if r["prediction"]]
        r_val, p_val = _pcc([h for h, _ in parsed], [p for _, p in parsed])
        out.update({f"pcc_{aspect}": r_val, f"pcc_{aspect}_p": p_val, f"pcc_{aspect}_n": len(parsed)})
        imputed = [(r["reference"][aspect], r["prediction"][aspect] if r["prediction"] else train_means[aspect])
                   for r in records]
        r_val, p_val = _pcc([h for h, _ in imputed], [p for _, p in imputed])
        out.update({f"pcc_{aspect}_imputed": r_val, f"pcc_{aspect}_imputed_p": p_val,
                    f"pcc_{aspect}_imputed_n": len(imputed)})
    return out


def error_rate(references: list[list[str]], hypotheses: list[list[str]]) -> float:
    """Corpus-level (S + D + I) / N: errors summed over utterances over reference tokens summed."""
    errors = sum(sum(1 for r, h in align(ref, hyp) if r != h) for ref, hyp in zip(references, hypotheses, strict=True))
    total = sum(len(ref) for ref in references)
    return errors / total if total else math.nan


def mdd_counts(canonical: list[str], annotated: list[str], recognised: list[str]) -> dict[str, int]:
    """TA/FR/FA/TR and, within TR, correct diagnoses (CD) and diagnosis errors (DE) over canonical phones."""
    said = per_canonical(canonical, annotated)
    heard = per_canonical(canonical, recognised)
    counts = dict.fromkeys(("ta", "fr", "fa", "tr", "cd", "de"), 0)
    for canon, s, h in zip(canonical, said, heard, strict=True):
        mispronounced = s != canon
        rejected = h != canon
        if not mispronounced:
            counts["fr" if rejected else "ta"] += 1
        elif not rejected:
            counts["fa"] += 1
        else:
            counts["tr"] += 1
            counts["cd" if h == s else "de"] += 1
    return counts


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def mdd_metrics(records: list[dict]) -> dict[str, float]:
    totals = dict.fromkeys(("ta", "fr", "fa", "tr", "cd", "de"), 0)
    hits = predicted = annotated = 0
    for rec in records:
        canonical = normalise_phones(rec["reference"]["canonical_phones"])
        said = normalise_phones(rec["reference"]["phoneme_transcript"])
        heard = normalise_phones(rec["prediction"]["phoneme_transcript"]) if rec["prediction"] else []
        for key, n in mdd_counts(canonical, said, heard).items():
            totals[key] += n
        hits += sum(1 for r, h in align(said, heard) if r is not None and r == h)
        predicted += len(heard)
        annotated += len(said)
    precision = _ratio(totals["tr"], totals["tr"] + totals["fr"])
    recall = _ratio(totals["tr"], totals["tr"] + totals["fa"])
    phone_p, phone_r = _ratio(hits, predicted), _ratio(hits, annotated)
    return {
        "mdd_precision": precision,
        "mdd_recall": recall,
        "mdd_f1": _ratio(2 * precision * recall, precision + recall),
        "far": 1 - recall if not math.isnan(recall) else math.nan,
        "frr": _ratio(totals["fr"], totals["ta"] + totals["fr"]),
        "der": _ratio(totals["de"], totals["cd"] + totals["de"]),
        "phone_precision": phone_p,
        "phone_recall": phone_r,
        "phone_f1": _ratio(2 * phone_p * phone_r, phone_p + phone_r),
        **{f"mdd_{k}": v for k, v in totals.items()},
    }


def compute_metrics(predictions: list[dict], train_means: dict[str, float]) -> dict[str, float]:
    """All of metrics.json from predictions.jsonl records."""
    apa = [r for r in predictions if r["task"] == "apa"]
    mdd = [r for r in predictions if r["task"] == "mdd"]
    words_ref = [normalise_words(r["reference"]["word_transcript"]).split() for r in mdd]
    words_hyp = [normalise_words(r["prediction"]["word_transcript"]).split() if r["prediction"] else [] for r in mdd]
    phones_ref = [normalise_phones(r["reference"]["phoneme_transcript"]) for r in mdd]
    phones_hyp = [normalise_phones(r["prediction"]["phoneme_transcript"]) if r["prediction"] else [] for r in mdd]
    out: dict[str, float] = {}
    if apa:
        out.update(apa_metrics(apa, train_means))
    if mdd:
        out.update(wer=error_rate(words_ref, words_hyp), per=error_rate(phones_ref, phones_hyp), **mdd_metrics(mdd))
    out.update(
        parse_rate_apa=_ratio(sum(1 for r in apa if r["prediction"]), len(apa)),
        parse_rate_mdd=_ratio(sum(1 for r in mdd if r["prediction"]), len(mdd)),
        n_apa=len(apa),
        n_mdd=len(mdd),
    )
    return out
