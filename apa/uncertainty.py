"""How sure a figure is: 95 % intervals for every metric of an evaluation, and paired differences between two
evaluations of the same test set, by bootstrap (resampling speakers by default: utterances of one speaker are not
independent), with the dependent-correlation tests of the literature for PCC differences.

Every statistic is a ratio or a correlation of per-utterance sums (`utterance_table`), so one bootstrap resample is a
row of weights over the utterances (how often each was drawn) and every resample's statistics come out of a few
matrix products: 2,500 utterances x 2,000 resamples take seconds. Methods and references: docs/metrics.md,
"Uncertainty".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from apa.data.records import APA_ASPECTS
from apa.metrics import (
    MDD_COUNTS,
    align,
    mdd_counts,
    normalise_phones,
    normalise_words,
)

SPEAKER, UTTERANCE = "speaker", "utterance"  # what a bootstrap resamples
RESAMPLES, SEED, LEVEL = 2000, 0, 0.95
# The metrics that get an interval: every figure the tables show, and the MDD rates beside them
CI_METRICS = (*(f"pcc_{a}" for a in APA_ASPECTS), "wer", "per", "mdd_precision", "mdd_recall", "mdd_f1", "far",
              "frr", "der")


@dataclass(frozen=True)
class UtteranceTable:
    """Per test utterance (ids in order), what every metric sums: APA human/predicted scores and whether the answer
    parsed; word and phone errors and reference lengths; the MDD counts (Fu et al.'s); and the speaker."""

    ids: list[str]
    speakers: list[str]
    apa_parsed: np.ndarray  # (N,) bool; False where the utterance has no APA answer or it did not parse
    human: dict[str, np.ndarray]  # aspect -> (N,)
    predicted: dict[str, np.ndarray]
    word_errors: np.ndarray
    words: np.ndarray
    phone_errors: np.ndarray
    phones: np.ndarray
    mdd: np.ndarray  # (N, len(MDD_COUNTS))


def _errors(reference: list[str], hypothesis: list[str]) -> int:
    return sum(1 for r, h in align(reference, hypothesis) if r != h)


def utterance_table(predictions: list[dict], speakers: dict[str, str] | None) -> UtteranceTable:
    """`predictions` (predictions.jsonl's records) by utterance. `speakers`: id -> speaker (test_split.json's); None
    makes every utterance its own speaker."""
    ids = sorted({r["id"] for r in predictions})
    index = {i: k for k, i in enumerate(ids)}
    n = len(ids)
    parsed = np.zeros(n, bool)
    human = {a: np.zeros(n) for a in APA_ASPECTS}
    predicted = {a: np.zeros(n) for a in APA_ASPECTS}
    word_errors, words, phone_errors, phones = (np.zeros(n) for _ in range(4))
    mdd = np.zeros((n, len(MDD_COUNTS)))
    for r in predictions:
        k = index[r["id"]]
        ref, pred = r["reference"], r["prediction"]
        if r["task"] == "apa":
            for a in APA_ASPECTS:
                human[a][k] = ref[a]
                predicted[a][k] = pred[a] if pred else 0.0
            parsed[k] = bool(pred)
        elif r["task"] == "mdd":
            w_ref = normalise_words(ref["word_transcript"]).split()
            w_hyp = normalise_words(pred["word_transcript"]).split() if pred else []
            p_ref = normalise_phones(ref["phoneme_transcript"])
            p_hyp = normalise_phones(pred["phoneme_transcript"]) if pred else []
            word_errors[k], words[k] = _errors(w_ref, w_hyp), len(w_ref)
            phone_errors[k], phones[k] = _errors(p_ref, p_hyp), len(p_ref)
            counts = mdd_counts(normalise_phones(ref["canonical_phones"]), p_ref, p_hyp)
            mdd[k] = [counts[c] for c in MDD_COUNTS]
    who = [speakers.get(i, i) for i in ids] if speakers else list(ids)
    return UtteranceTable(ids, who, parsed, human, predicted, word_errors, words, phone_errors, phones, mdd)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _pearson(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Weighted Pearson r for each row of weights `w` (B, N): the sample r of the resample the row counts."""
    s0 = w.sum(axis=1)
    mx, my = _ratio(w @ x, s0), _ratio(w @ y, s0)
    cxy = _ratio(w @ (x * y), s0) - mx * my
    vx = _ratio(w @ (x * x), s0) - mx**2
    vy = _ratio(w @ (y * y), s0) - my**2
    scale = np.maximum(np.abs(mx), 1.0) ** 2 * 1e-12  # a variance this small is a constant side (rounding)
    ok = (vx > scale) & (vy > scale)
    return np.where(ok, cxy / np.sqrt(np.where(ok, vx * vy, 1.0)), np.nan)


def statistics(table: UtteranceTable, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every CI_METRICS figure for each row of `weights` (B, N): how often each utterance counts in a resample. A
    row of ones gives the evaluation's own figures (apa.metrics.compute_metrics')."""
    out: dict[str, np.ndarray] = {}
    w_apa = weights * table.apa_parsed
    for a in APA_ASPECTS:
        out[f"pcc_{a}"] = _pearson(w_apa, table.human[a], table.predicted[a])
    out["wer"] = _ratio(weights @ table.word_errors, weights @ table.words)
    out["per"] = _ratio(weights @ table.phone_errors, weights @ table.phones)
    c = dict(zip(MDD_COUNTS, (weights @ table.mdd).T, strict=True))
    precision, recall = _ratio(c["tr"], c["tr"] + c["fr"]), _ratio(c["tr"], c["tr"] + c["fa"])
    with np.errstate(invalid="ignore"):
        f1 = np.where(precision + recall > 0, _ratio(2 * precision * recall, precision + recall), 0.0)
    out.update(mdd_precision=precision, mdd_recall=recall, mdd_f1=np.where(np.isnan(precision + recall), np.nan, f1),
               far=1 - recall, frr=_ratio(c["fr"], c["ta"] + c["fr"]), der=_ratio(c["de"], c["cd"] + c["de"]))
    return out


def resample_weights(table: UtteranceTable, resamples: int, seed: int, unit: str = SPEAKER) -> np.ndarray:
    """(resamples, N) counts: each row draws the units (speakers, or utterances) with replacement, as many as there
    are, and counts each utterance as often as its unit was drawn."""
    if unit not in (SPEAKER, UTTERANCE):
        raise ValueError(f"unknown bootstrap unit {unit!r}: {SPEAKER} or {UTTERANCE}")
    groups = table.speakers if unit == SPEAKER else table.ids
    names, of = np.unique(np.asarray(groups), return_inverse=True)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(names), size=(resamples, len(names)))
    counts = np.zeros((resamples, len(names)))
    np.add.at(counts, (np.repeat(np.arange(resamples), len(names)), draws.ravel()), 1.0)
    return counts[:, of]


def _interval(values: np.ndarray, level: float) -> list[float] | None:
    """The percentile interval, or None where over 1 % of resamples leave the figure undefined."""
    finite = values[np.isfinite(values)]
    if len(finite) < 0.99 * len(values) or not len(finite):
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return [float(low), float(high)]


def intervals(predictions: list[dict], speakers: dict[str, str] | None, resamples: int = RESAMPLES,
              seed: int = SEED, unit: str = SPEAKER, level: float = LEVEL) -> dict:
    """metrics.json's `ci95` (metric -> [low, high], null where undefined) and `ci_method` (how: unit, resamples,
    seed, level, units counted). Without speakers a speaker bootstrap is refused: the utterance one is named."""
    table = utterance_table(predictions, speakers)
    unit, note = bootstrap_unit(table, unit, bool(speakers))
    if note is not None and unit is None:  # too few utterances for any interval
        return {"ci95": dict.fromkeys(CI_METRICS), "ci_method": {"method": None, "note": note}}
    weights = resample_weights(table, resamples, seed, unit)
    stats = statistics(table, weights)
    return {"ci95": {k: _interval(v, level) for k, v in stats.items()},
            "ci_method": {"method": f"{unit} bootstrap, percentile interval", "unit": unit, "resamples": resamples,
                          "seed": seed, "level": level, "speakers": len(set(table.speakers)),
                          "utterances": len(table.ids), **({"note": note} if note else {})}}


MIN_UNITS = 5  # fewer speakers (or utterances) than this: the bootstrap would only reshuffle a handful


def bootstrap_unit(table: UtteranceTable, unit: str, have_speakers: bool) -> tuple[str | None, str | None]:
    """The unit the bootstrap can honestly resample, and why it is not the one asked for (None: as asked).
    Speakers need the split's speaker list and at least MIN_UNITS of them; with fewer (the bundled sample's test
    split is one speaker), utterances are resampled and the note says so; with fewer than MIN_UNITS utterances, no
    interval at all (unit None)."""
    speakers, utterances = len(set(table.speakers)), len(table.ids)
    if utterances < MIN_UNITS:
        return None, f"{utterances} utterance(s): too few for an interval (at least {MIN_UNITS})"
    if unit == SPEAKER and not have_speakers:
        return UTTERANCE, "the test split's speakers are not recorded: utterances resampled as if independent"
    if unit == SPEAKER and speakers < MIN_UNITS:
        return UTTERANCE, (f"{speakers} speaker(s): too few to resample speakers (at least {MIN_UNITS}); utterances "
                           "resampled as if independent, so the interval ignores the speaker effect")
    return unit, None


# ---------------------------------------------------------------------------------------------------------------
# Two evaluations of one test set
# ---------------------------------------------------------------------------------------------------------------


class NotPaired(ValueError):
    """Two evaluations that cannot be compared pair by pair (other utterances or other references)."""


def _same_test_set(a: list[dict], b: list[dict]) -> None:
    key = {(r["id"], r["task"]): r["reference"] for r in a}
    other = {(r["id"], r["task"]): r["reference"] for r in b}
    if key.keys() != other.keys():
        raise NotPaired(f"the evaluations answered different test items ({len(key)} vs {len(other)}, "
                        f"{len(key.keys() ^ other.keys())} not in both)")
    if any(key[k] != other[k] for k in key):
        raise NotPaired("the evaluations scored the same ids against different references")


def _p_value(differences: np.ndarray) -> float | None:
    """Two-sided bootstrap p-value of a difference: twice the smaller share of resamples on either side of 0 (the
    level at which the percentile interval would just reach 0), at most 1."""
    finite = differences[np.isfinite(differences)]
    if len(finite) < 0.99 * len(differences) or not len(finite):
        return None
    below, above = np.mean(finite <= 0), np.mean(finite >= 0)
    return float(min(1.0, 2 * min(below, above)))


def zou_interval(r12: float, r13: float, r23: float, n: int, level: float = LEVEL) -> list[float]:
    """Zou (2007), "Toward using confidence intervals to compare correlations", Psychological Methods 12(4):399-413,
    overlapping case: the interval of r12 - r13, two correlations with variable 1 in common (human vs run A, human vs
    run B), r23 the correlation of A with B, all over the same n pairs. Each r's own interval by Fisher's z, then
    combined with their correlation (Olkin & Finn's asymptotic covariance, as Zou gives it)."""
    z = norm.ppf(1 - (1 - level) / 2)

    def fisher(r: float) -> tuple[float, float]:
        half = z / math.sqrt(n - 3)
        return math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half)

    (l1, u1), (l2, u2) = fisher(r12), fisher(r13)
    c = ((r23 - 0.5 * r12 * r13) * (1 - r12**2 - r13**2 - r23**2) + r23**3) / ((1 - r12**2) * (1 - r13**2))
    low = r12 - r13 - math.sqrt(max(0.0, (r12 - l1) ** 2 + (u2 - r13) ** 2 - 2 * c * (r12 - l1) * (u2 - r13)))
    high = r12 - r13 + math.sqrt(max(0.0, (u1 - r12) ** 2 + (r13 - l2) ** 2 - 2 * c * (u1 - r12) * (r13 - l2)))
    return [low, high]


def steiger_p(r12: float, r13: float, r23: float, n: int) -> float:
    """Steiger (1980), "Tests for comparing elements of a correlation matrix", Psychological Bulletin 87(2):245-251,
    eq. 14 with the pooled r (Dunn & Clark's z): two-sided p of H0 r12 = r13 for overlapping dependent
    correlations."""
    mean = (r12 + r13) / 2
    psi = r23 * (1 - 2 * mean**2) - 0.5 * mean**2 * (1 - 2 * mean**2 - r23**2)
    c = psi / (1 - mean**2) ** 2
    if 2 - 2 * c <= 1e-12:  # A and B agree perfectly (r23 = 1): their correlations with the humans are one
        return 1.0 if math.isclose(r12, r13, abs_tol=1e-12) else 0.0
    statistic = (math.atanh(r12) - math.atanh(r13)) * math.sqrt(n - 3) / math.sqrt(2 - 2 * c)
    return float(2 * norm.sf(abs(statistic)))


def paired(a: list[dict], b: list[dict], speakers: dict[str, str] | None, resamples: int = RESAMPLES,
           seed: int = SEED, unit: str = SPEAKER, level: float = LEVEL) -> dict:
    """Evaluation a minus evaluation b, metric by metric, on the same test set: the difference, its interval from a
    paired bootstrap (the same resampled speakers for both) and a two-sided p-value; for each PCC also Zou's interval
    and Steiger's p over the utterances whose APA answer parsed in both. Raises NotPaired for different test sets."""
    _same_test_set(a, b)
    ta, tb = utterance_table(a, speakers), utterance_table(b, speakers)
    unit, note = bootstrap_unit(ta, unit, bool(speakers))
    if unit is None:
        raise NotPaired(note)
    weights = resample_weights(ta, resamples, seed, unit)
    ones = np.ones((1, len(ta.ids)))
    point_a, point_b = statistics(ta, ones), statistics(tb, ones)
    boot_a, boot_b = statistics(ta, weights), statistics(tb, weights)
    out: dict = {}
    for metric in CI_METRICS:
        diff = boot_a[metric] - boot_b[metric]
        out[metric] = {"a": float(point_a[metric][0]), "b": float(point_b[metric][0]),
                       "difference": float(point_a[metric][0] - point_b[metric][0]),
                       "ci95": _interval(diff, level), "p": _p_value(diff)}
        if metric.startswith("pcc_"):
            aspect = metric.removeprefix("pcc_")
            both = ta.apa_parsed & tb.apa_parsed
            h, x, y = ta.human[aspect][both], ta.predicted[aspect][both], tb.predicted[aspect][both]
            if both.sum() > 3 and min(np.std(h), np.std(x), np.std(y)) > 0:
                r12, r13, r23 = (float(np.corrcoef(u, v)[0, 1]) for u, v in ((h, x), (h, y), (x, y)))
                n = int(both.sum())
                if max(abs(r12), abs(r13)) > 1 - 1e-12:  # a perfect correlation: Fisher's z is infinite, no test
                    out[metric].update(n_both=n)
                    continue
                out[metric].update(zou_ci95=zou_interval(r12, r13, r23, n, level),
                                   steiger_p=steiger_p(r12, r13, r23, n), n_both=n)
    out["method"] = {"method": f"paired {unit} bootstrap, percentile interval", "unit": unit,
                     "resamples": resamples, "seed": seed, "level": level, "speakers": len(set(ta.speakers)),
                     "utterances": len(ta.ids), **({"note": note} if note else {})}
    return out


def verdict(name: str, result: dict, metric: str = "pcc_total") -> str:
    """One sentence: 'r320 - r64, PCC total: +0.013 [-0.008, 0.034], p = 0.22: no evidence of a difference'."""
    r = result[metric]
    if r["ci95"] is None or r["p"] is None:
        return f"{name}, {metric}: undefined here (too few answers, or constant scores in many resamples)"
    low, high = r["ci95"]
    words = "no evidence of a difference" if low <= 0 <= high else (
        "higher" if low > 0 else "lower") + f" ({result['method']['unit']} bootstrap)"
    return f"{name}, {metric}: {r['difference']:+.3f} [{low:+.3f}, {high:+.3f}], p = {r['p']:.2g}: {words}"
