"""Table 3's metrics from predictions: PCC per aspect (with n and p), WER, PER, MDD (TA/FR/FA/TR hierarchy counted as
Fu et al.'s scorer counts it, and a named annotation-index variant) and phone recognition.

Every convention is written down with worked examples in docs/metrics.md.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Iterable

import jiwer
from scipy.stats import pearsonr

from apa.data.records import APA_ASPECTS, DELETED, DELETION_MARKS, UNKNOWN_PHONE, strip_stress

_PUNCT = re.compile(f"[{re.escape(string.punctuation.replace(chr(39), ''))}]")


def normalise_words(text: str) -> str:
    """Upper-case, punctuation dropped (apostrophes kept: LET'S is one word), single spaces."""
    return " ".join(_PUNCT.sub(" ", text.upper()).split())


def normalise_phones(phones: str | Iterable[str]) -> list[str]:
    """Phones as every metric compares them: upper-cased, stress digits stripped (`ih1` -> `IH`), `<unk>` in any case
    -> `<unk>`, annotated deletions (`<del>`, `<DEL>`) dropped (they mark a phone that is absent, not a phone)."""
    tokens = phones.split() if isinstance(phones, str) else list(phones)
    out = []
    for token in tokens:
        folded = token.lower()
        if folded in DELETION_MARKS:
            continue
        out.append(UNKNOWN_PHONE if folded == UNKNOWN_PHONE else strip_stress(token.upper()))
    return out


def normalise_truth(phones: str | Iterable[str]) -> list[str]:
    """Per-phone truth (`phone_truth`, one token per canonical phone) normalised like `normalise_phones`, except that
    a deletion mark stays, as `<del>`: it holds the place of the canonical phone the speaker deleted."""
    tokens = phones.split() if isinstance(phones, str) else list(phones)
    return [DELETED if token.lower() in DELETION_MARKS else normalise_phones([token])[0] for token in tokens]


def align(reference: list[str], hypothesis: list[str]) -> list[tuple[str | None, str | None]]:
    """Edit-distance alignment (jiwer) as (ref, hyp) pairs; None marks a deletion (hyp) or insertion (ref).

    For WER, PER (whose error counts do not depend on which cheapest alignment is taken), phone recognition and
    apa.serve.predict's display; MDD uses `kaldi_align`, whose ties fall as in the published scorer.
    """
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


EPS = "<eps>"


def kaldi_align(reference: list[str], hypothesis: list[str], eps: str = EPS) -> list[tuple[str, str]]:
    """Levenshtein alignment as Kaldi's `align-text` makes it, as (ref, hyp) pairs with `eps` facing an inserted or
    deleted token.

    Same costs and the same choice between equally cheap alignments as `LevenshteinAlignment` in kaldi-asr/kaldi
    src/util/edit-distance-inl.h (called by src/bin/align-text.cc): substitution, insertion and deletion cost 1 each,
    a match 0; the path is traced back from the end of both sequences and, at every step, a match/substitution is
    taken when it is no dearer than the alternatives, else a deletion when no dearer than an insertion. So ties
    put substitutions and matches late and deletions/insertions early (`A B` vs `C` -> `A <eps> ; B C`).
    """
    if eps in reference or eps in hypothesis:
        raise ValueError(f"{eps!r} marks gaps in the alignment and cannot be a token")
    rows, cols = len(reference), len(hypothesis)
    cost = [list(range(cols + 1))]
    for i in range(1, rows + 1):
        row = [i]
        for j in range(1, cols + 1):
            row.append(min(cost[i - 1][j - 1] + (reference[i - 1] != hypothesis[j - 1]),
                           cost[i - 1][j] + 1, row[j - 1] + 1))
        cost.append(row)
    pairs: list[tuple[str, str]] = []
    i, j = rows, cols
    while i or j:
        if i and j:
            diagonal = cost[i - 1][j - 1] + (reference[i - 1] != hypothesis[j - 1])
            deletion, insertion = cost[i - 1][j] + 1, cost[i][j - 1] + 1
            step_i, step_j = (1, 1) if diagonal <= min(deletion, insertion) else (1, 0) if deletion <= insertion \
                else (0, 1)
        else:
            step_i, step_j = (1, 0) if i else (0, 1)
        pairs.append((reference[i - 1] if step_i else eps, hypothesis[j - 1] if step_j else eps))
        i, j = i - step_i, j - step_j
    return pairs[::-1]


def _pcc(human: list[float], predicted: list[float]) -> tuple[float, float]:
    # undefined: too few pairs, or a constant side. Compared exactly: np.std of equal floats (the training mean
    # imputed for every unparsed answer) may be 1e-17, not 0, and pearsonr would then warn before saying NaN
    if len(human) < 2 or len(set(human)) < 2 or len(set(predicted)) < 2:
        return math.nan, math.nan
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


MDD_COUNTS = ("ta", "fr", "fa", "tr", "cd", "de")
# What `mdd_outcomes` calls each decision: true accept, false reject, false accept, true reject with a correct
# diagnosis, true reject with a diagnosis error
MDD_OUTCOMES = ("ta", "fr", "fa", "cd", "de")


def mdd_outcomes(canonical: list[str], annotated: list[str], recognised: list[str],
                 truth: list[str] | None = None) -> list[tuple[str, str, str, str]]:
    """One (canonical, said, heard, outcome) per decision that `mdd_counts` counts, in order, outcome in
    MDD_OUTCOMES. Rules, as Fu et al.'s scorer counts (cageyoko/CTC-Attention-Mispronunciation,
    egs/cnn-rnn-ctc/result/utils/scoring/ins_del_sub_cor_analysis.py, driven by three Kaldi `align-text`
    alignments in mdd_result.sh beside it; egs/timit_l2arctic/... in older commits); our own implementation of its
    rules:

    - one decision per position of the canonical-annotated relation: every canonical phone, and every phone the
      annotator heard inserted (canonical `<eps>`). Without `truth` the relation is `kaldi_align`'s, as Fu's
      `align-text` makes it (the `mdd_*` figures). With `truth` (one token per canonical phone: what was said there,
      `<del>` for a deletion; SpeechOcean762's annotation gives each mispronunciation's index) it is the
      annotation's own (the `mdd_annot_*` variant), which may put a deletion or substitution at another position
      than the alignment's;
    - `said` is the annotated phone there (`<eps>`: deleted by the speaker), `heard` the recognised phone facing it:
      taken from the annotated-recognised alignment where a phone was said, from the canonical-recognised alignment
      where the speaker deleted the canonical phone (`<eps>`: nothing recognised there); phones the model inserted
      face no annotated phone and are not counted;
    - mispronounced iff said != canonical, rejected iff heard != canonical (`<eps>` is a symbol like any other);
      a true rejection is a correct diagnosis iff heard == said.
    """
    if truth is None:
        human = kaldi_align(canonical, annotated)
    else:
        if len(truth) != len(canonical):
            raise ValueError(f"phone_truth has {len(truth)} phones for {len(canonical)} canonical ones: "
                             f"{' '.join(truth)!r} vs {' '.join(canonical)!r}")
        human = [(canon, EPS if said == DELETED else said) for canon, said in zip(canonical, truth, strict=True)]
        if [said for _, said in human if said != EPS] != annotated:
            raise ValueError(f"phone_truth {' '.join(truth)!r} does not give the annotated phones "
                             f"{' '.join(annotated)!r}")
    facing_said = [heard for said, heard in kaldi_align(annotated, recognised) if said != EPS]
    facing_canonical = [heard for canon, heard in kaldi_align(canonical, recognised) if canon != EPS]
    out = []
    n_canon = n_said = 0  # canonical / annotated phones passed so far
    for canon, said in human:
        heard = facing_canonical[n_canon] if said == EPS else facing_said[n_said]
        n_canon += canon != EPS
        n_said += said != EPS
        if said == canon:
            outcome = "ta" if heard == canon else "fr"
        elif heard == canon:
            outcome = "fa"
        else:
            outcome = "cd" if heard == said else "de"
        out.append((canon, said, heard, outcome))
    return out


def mdd_counts(canonical: list[str], annotated: list[str], recognised: list[str],
               truth: list[str] | None = None) -> dict[str, int]:
    """TA/FR/FA/TR and, within TR, correct diagnoses (CD) and diagnosis errors (DE): `mdd_outcomes` counted."""
    counts = dict.fromkeys(MDD_COUNTS, 0)
    for *_, outcome in mdd_outcomes(canonical, annotated, recognised, truth):
        counts[outcome] += 1
        if outcome in ("cd", "de"):
            counts["tr"] += 1
    return counts


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def _f1(precision: float, recall: float) -> float:
    """Harmonic mean; 0.0 where precision and recall are both 0, undefined (NaN) where either is."""
    if math.isnan(precision) or math.isnan(recall):
        return math.nan
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _mdd_rates(totals: dict[str, int], prefix: str) -> dict[str, float]:
    """P/R/F1, FAR/FRR/DER of summed `mdd_counts`, and the counts, under `prefix` (`mdd_` or `mdd_annot_`; the
    Fu et al. figures keep their historical names `far`, `frr`, `der`)."""
    precision = _ratio(totals["tr"], totals["tr"] + totals["fr"])
    recall = _ratio(totals["tr"], totals["tr"] + totals["fa"])
    rates = {"far": 1 - recall if not math.isnan(recall) else math.nan,
             "frr": _ratio(totals["fr"], totals["ta"] + totals["fr"]),
             "der": _ratio(totals["de"], totals["cd"] + totals["de"])}
    return {f"{prefix}precision": precision, f"{prefix}recall": recall, f"{prefix}f1": _f1(precision, recall),
            **{(k if prefix == "mdd_" else f"{prefix}{k}"): v for k, v in rates.items()},
            **{f"{prefix}{k}": v for k, v in totals.items()}}


def mdd_metrics(records: list[dict]) -> dict[str, float]:
    """MDD and phone recognition over `records` (predictions.jsonl's MDD records):

    - `mdd_*`, `far`, `frr`, `der`: Fu et al.'s scorer exactly: the canonical-annotated relation re-aligned with
      `kaldi_align`, as its `align-text` step does, whatever the references carry;
    - `mdd_annot_*`: the variant that takes the relation from SpeechOcean762's annotation indices (`phone_truth`),
      present only when every reference carries it. Not Fu's: its own name, never in a column labelled as Fu's;
    - `phone_precision|recall|f1`: the predicted phone sequence against the annotated one.

    An unparsed answer counts as an empty recognition (every canonical phone rejected), in both MDD figures."""
    fu, annot = dict.fromkeys(MDD_COUNTS, 0), dict.fromkeys(MDD_COUNTS, 0)
    hits = predicted = annotated = 0
    with_truth = all(rec["reference"].get("phone_truth") is not None for rec in records)
    for rec in records:
        canonical = normalise_phones(rec["reference"]["canonical_phones"])
        said = normalise_phones(rec["reference"]["phoneme_transcript"])
        heard = normalise_phones(rec["prediction"]["phoneme_transcript"]) if rec["prediction"] else []
        for key, n in mdd_counts(canonical, said, heard).items():
            fu[key] += n
        if with_truth:
            truth = normalise_truth(rec["reference"]["phone_truth"])
            for key, n in mdd_counts(canonical, said, heard, truth).items():
                annot[key] += n
        hits += sum(1 for r, h in align(said, heard) if r is not None and r == h)
        predicted += len(heard)
        annotated += len(said)
    phone_p, phone_r = _ratio(hits, predicted), _ratio(hits, annotated)
    return {
        **_mdd_rates(fu, "mdd_"),
        **(_mdd_rates(annot, "mdd_annot_") if with_truth and records else {}),
        "phone_precision": phone_p,
        "phone_recall": phone_r,
        "phone_f1": _f1(phone_p, phone_r),
    }


def compute_metrics(predictions: list[dict], train_means: dict[str, float],
                    split: dict | None = None) -> dict:
    """All of metrics.json from predictions.jsonl records. `split`: the test split's record (test_split.json, as
    `evaluation.evaluation_set` makes it); without it the split's size is unknown (null)."""
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
        # present: only the utterances with a parsed answer, as Kaldi's `compute-wer --mode=present` in Fu et al.'s
        # scorer skips an utterance with no hypothesis; wer/per count an unparsed answer as an empty one
        present = [i for i, r in enumerate(mdd) if r["prediction"]]
        out.update(wer=error_rate(words_ref, words_hyp), per=error_rate(phones_ref, phones_hyp),
                   wer_present=error_rate([words_ref[i] for i in present], [words_hyp[i] for i in present]),
                   per_present=error_rate([phones_ref[i] for i in present], [phones_hyp[i] for i in present]),
                   **mdd_metrics(mdd))
    split = split or {}
    out.update(
        parse_rate_apa=_ratio(sum(1 for r in apa if r["prediction"]), len(apa)),
        parse_rate_mdd=_ratio(sum(1 for r in mdd if r["prediction"]), len(mdd)),
        n_apa=len(apa),
        n_mdd=len(mdd),
        n_apa_parsed=sum(1 for r in apa if r["prediction"]),  # = pcc_*_n: PCC is over these
        n_mdd_parsed=sum(1 for r in mdd if r["prediction"]),
        # how much of the split was evaluated: utterances with any answer, parsed or not (every metric but PCC counts
        # an unparsed answer, as empty or imputed); canonical phones of the MDD references
        n_utterances_scored=len({r["id"] for r in predictions}),
        n_utterances_in_split=split.get("utterances_in_split"),
        n_phones_scored=sum(len(normalise_phones(r["reference"]["canonical_phones"])) for r in mdd),
        n_phones_in_split=split.get("phones_in_split"),
        split_limit=split.get("limit"),  # data.limit: the "split" above is then the first `limit` utterances
    )
    if "utterances_trained_on" in split:  # test utterances the evaluated run trained on (absent: not checked)
        out["n_utterances_trained_on"] = split["utterances_trained_on"]
    return out


# ---------------------------------------------------------------------------------------------------------------
# How a metric prints (every table and log line uses these)
# ---------------------------------------------------------------------------------------------------------------


def fmt(value) -> str:
    """Three decimals; an integer as it is (a count, a step); n/a where undefined (None, NaN)."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{value:.3f}"


SIGNIFICANCE = 0.05
NOT_SIGNIFICANT = "‡"  # marks a PCC whose two-sided p >= SIGNIFICANCE, where the paper underlines


def fmt_pcc(metrics: dict, key: str) -> str:
    """A PCC cell: three decimals, marked NOT_SIGNIFICANT where its p-value (metrics.json's `<key>_p`) is >= 0.05."""
    p = metrics.get(f"{key}_p")
    text = fmt(metrics.get(key))
    return text + NOT_SIGNIFICANT if text != "n/a" and p is not None and not math.isnan(p) and p >= SIGNIFICANCE \
        else text


def coverage(metrics: dict) -> tuple[str, str, str, str]:
    """('2500/2500', '47000/47000', '2480/2500', '2490/2500') for a table row: utterances and canonical phones
    evaluated / in the split; APA answers parsed (the PCC's n) and MDD answers parsed / answers."""
    cells = []
    for unit in ("utterances", "phones"):
        scored, total = metrics.get(f"n_{unit}_scored"), metrics.get(f"n_{unit}_in_split")
        cells.append("n/a" if scored is None else f"{scored}/{'?' if total is None else total}")
    if metrics.get("split_limit"):
        cells[0] += f" (limit {metrics['split_limit']})"
    for task in ("apa", "mdd"):
        parsed, total = metrics.get(f"n_{task}_parsed"), metrics.get(f"n_{task}")
        cells.append("n/a" if parsed is None or not total else f"{parsed}/{total}")
    return cells[0], cells[1], cells[2], cells[3]


def format_metrics(m: dict) -> str:
    """One log line: the headline metrics and how much of the test split was scored."""
    keys = ("pcc_accuracy", "pcc_fluency", "pcc_prosodic", "pcc_total", "wer", "per", "mdd_f1",
            "parse_rate_apa", "parse_rate_mdd")
    utterances, phones, _, _ = coverage(m)
    return " ".join(f"{k}={fmt(m.get(k))}" for k in keys) + f" utterances={utterances} phones={phones}"
