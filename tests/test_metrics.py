"""Every metric against values computed by hand (the same cases are worked through in docs/metrics.md)."""

import json
import math
import subprocess
import sys

import pytest

from apa.evaluation.predictions import score_file
from apa.metrics import (
    EPS,
    MDD_COUNTS,
    compute_metrics,
    error_rate,
    fmt,
    kaldi_align,
    mdd_counts,
    mdd_outcomes,
    normalise_phones,
    normalise_truth,
    normalise_words,
)
from tests.conftest import REPO


def _mdd(idx, canonical, annotated, recognised, words_ref="X", words_hyp="X"):
    prediction = None if recognised is None else {"word_transcript": words_hyp, "phoneme_transcript": recognised}
    return {"id": str(idx), "task": "mdd", "raw": "",
            "reference": {"word_transcript": words_ref, "phoneme_transcript": annotated,
                          "canonical_phones": canonical},
            "prediction": prediction}


def _apa(idx, human, predicted):
    aspects = ("accuracy", "fluency", "prosodic", "total")
    return {"id": str(idx), "task": "apa", "raw": "", "reference": dict.fromkeys(aspects, human),
            "prediction": None if predicted is None else dict.fromkeys(aspects, predicted)}


# canonical / annotated (what was said) / recognised (model)
MDD_CASES = [
    _mdd(1, "DH IH1 S IH0 Z", "D IH S IH Z", "D IH IH Z", "THIS IS", "this is,"),  # TR+CD, FR (S deleted)
    _mdd(2, "K AE1 T", "K AH T", "K EH T S", "CAT", "cat!"),  # TR+DE (AH said, EH heard), S inserted
    _mdd(3, "B IY1", "B IH", "B IY", "BE", "BEE"),  # FA: IH said, canonical IY heard
    _mdd(4, "S T AA1 P", "S AH T AA P", "S AH T AA P", "STOP", "stop."),  # AH inserted by the speaker, heard: TR+CD
]


def test_mdd_hierarchy_counts_by_hand():
    assert mdd_counts("DH IH S IH Z".split(), "D IH S IH Z".split(), "D IH IH Z".split()) == {
        "ta": 3, "fr": 1, "fa": 0, "tr": 1, "cd": 1, "de": 0}
    assert mdd_counts("K AE T".split(), "K AH T".split(), "K EH T S".split()) == {
        "ta": 2, "fr": 0, "fa": 0, "tr": 1, "cd": 0, "de": 1}



def test_mdd_outcomes_name_each_counted_decision_in_order():
    # DH said as D, heard as D (correct diagnosis); the second S deleted by the model (false rejection)
    assert mdd_outcomes("DH IH S IH Z".split(), "D IH S IH Z".split(), "D IH IH Z".split()) == [
        ("DH", "D", "D", "cd"), ("IH", "IH", "IH", "ta"), ("S", "S", EPS, "fr"), ("IH", "IH", "IH", "ta"),
        ("Z", "Z", "Z", "ta")]
    # the speaker deleted T (said <eps>) and the model heard it anyway: a false acceptance
    assert mdd_outcomes("K AE T".split(), "K AE".split(), "K AE T".split())[-1] == ("T", EPS, "T", "fa")
    # the speaker's inserted S is a position of its own (canonical <eps>), rejected with the right phone
    assert mdd_outcomes("K AE T".split(), "K AE T S".split(), "K AE T S".split())[-1] == (EPS, "S", "S", "cd")
    outcomes = mdd_outcomes("K AE T".split(), "K AH T".split(), "K EH T S".split())
    assert [o for *_, o in outcomes] == ["ta", "de", "ta"]

def test_all_metrics_on_hand_computed_cases():
    m = compute_metrics(MDD_CASES, {})
    # cases 1-3: TA 6, FR 1, FA 1, TR 2 (CD 1, DE 1); case 4 (new: the speaker's insertion is a position of its own,
    # which the canonical-aligned counting used before ignored): TA 4, TR 1 (CD 1) -> TA 10, FR 1, FA 1, TR 3
    assert (m["mdd_ta"], m["mdd_fr"], m["mdd_fa"], m["mdd_tr"], m["mdd_cd"], m["mdd_de"]) == (10, 1, 1, 3, 2, 1)
    assert m["mdd_precision"] == pytest.approx(3 / 4) and m["mdd_recall"] == pytest.approx(3 / 4)
    assert m["mdd_f1"] == pytest.approx(3 / 4)
    assert m["far"] == pytest.approx(1 / 4) and m["frr"] == pytest.approx(1 / 11) and m["der"] == pytest.approx(1 / 3)
    # PER: 1 deletion / 5 + (1 sub + 1 insertion) / 3 + 1 sub / 2 + 0 / 5 -> 4 / 15
    assert m["per"] == pytest.approx(4 / 15)
    # phone recognition: 7 + 5 hits, 10 + 5 predicted, 10 + 5 annotated
    assert (m["phone_precision"], m["phone_recall"], m["phone_f1"]) == pytest.approx((0.8, 0.8, 0.8))
    # WER after normalisation: only BE -> BEE is wrong, 1 / 5 words
    assert m["wer"] == pytest.approx(0.2)
    assert m["parse_rate_mdd"] == 1 and m["n_mdd"] == 4


def _counts(canonical, annotated, recognised):
    return mdd_counts(canonical.split(), annotated.split(), recognised.split())


def _hierarchy(ta=0, fr=0, fa=0, cd=0, de=0):
    return {"ta": ta, "fr": fr, "fa": fa, "tr": cd + de, "cd": cd, "de": de}


def test_a_phone_the_speaker_inserted_is_judged_like_any_other():
    # canonical S T AA P, said S AH T AA P: the inserted AH is a position of its own (Fu et al.'s ins_ins/ins_noins)
    assert _counts("S T AA P", "S AH T AA P", "S AH T AA P") == _hierarchy(ta=4, cd=1)  # AH recognised
    assert _counts("S T AA P", "S AH T AA P", "S T AA P") == _hierarchy(ta=4, fa=1)  # AH missed: accepted
    assert _counts("S T AA P", "S AH T AA P", "S IH T AA P") == _hierarchy(ta=4, de=1)  # IH for AH: wrong diagnosis


def test_the_recognised_phones_are_aligned_to_what_was_said_not_to_the_canonical_phones():
    # AE expected, AH said, the model writes both: aligned to K AH T, AH is recognised (AE an ignored insertion) ->
    # TR + CD; aligned to the canonical phones (the convention used before) AE would have matched AE: FA
    assert _counts("K AE T", "K AH T", "K AE AH T") == _hierarchy(ta=2, cd=1)
    # a phone the model adds where the speaker was right is not counted (no FR): it faces no annotated phone
    assert _counts("K AE T", "K AE T", "K AE EH T") == _hierarchy(ta=3)


def test_kaldi_tie_break_between_equally_cheap_alignments():
    # Kaldi traces back from the end and prefers match/substitution, then deletion, then insertion
    assert kaldi_align(["B", "AE"], ["P"]) == [("B", EPS), ("AE", "P")]  # not (B, P), (AE, <eps>): also cost 2
    assert kaldi_align(["A", "B"], ["B", "A"]) == [("A", "B"), ("B", "A")]  # two substitutions, not del + ins
    # last step: sub A/B costs 3, deletion and insertion 2 each -> the deletion; then B B and A A match
    assert kaldi_align(["A", "B", "A"], ["B", "A", "B"]) == [(EPS, "B"), ("A", "A"), ("B", "B"), ("A", EPS)]
    assert kaldi_align([], ["A"]) == [(EPS, "A")] and kaldi_align(["A"], []) == [("A", EPS)]
    # canonical P AE, said B AE, recognised P: B faces <eps> (DE: rejected, wrongly diagnosed), AE faces P (FR).
    # The other cheapest alignment (jiwer's) would give B -> P (FA) and AE -> <eps> (FR).
    assert _counts("P AE", "B AE", "P") == _hierarchy(fr=1, de=1)


def test_f1_is_zero_when_precision_and_recall_are_both_zero():
    # AH said for AE, the model hears AE (FA); T said right, the model hears D (FR): TR 0 -> P = 0/1, R = 0/1
    m = compute_metrics([_mdd(1, "K AE T", "K AH T", "K AE D")], {})
    assert (m["mdd_ta"], m["mdd_fr"], m["mdd_fa"], m["mdd_tr"]) == (1, 1, 1, 0)
    assert m["mdd_precision"] == 0 and m["mdd_recall"] == 0 and m["mdd_f1"] == 0.0
    assert m["far"] == 1 and m["frr"] == 0.5 and math.isnan(m["der"])  # no true rejection: DER undefined


def test_deletion_marks_and_unk_are_normalised_inside_the_metric():
    assert normalise_phones("k <DEL> ae1 <UNK> T <del> <unk> AE*") == ["K", "AE", "<unk>", "T", "<unk>", "AE*"]
    m = compute_metrics([_mdd(1, "K AE1 T", "K <del> T", "K T"),  # AE deleted, and not heard: TR + CD
                         _mdd(2, "S IY1", "S <UNK>", "s <unk>")], {})  # <unk> said and heard: TR + CD
    assert (m["mdd_ta"], m["mdd_fr"], m["mdd_fa"], m["mdd_cd"], m["mdd_de"]) == (3, 0, 0, 2, 0)
    assert m["per"] == 0 and m["mdd_f1"] == 1


def test_metrics_json_holds_null_for_undefined_values(tmp_path):
    # MDD answers only: no APA answer, so parse_rate_apa is 0/0; no true rejection, so DER is 0/0
    path = tmp_path / "predictions.jsonl"
    path.write_text(json.dumps(_mdd(1, "K AE T", "K AE T", "K AE T")) + "\n")
    score_file(path, {})
    text = (tmp_path / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    metrics = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in metrics.json"))
    assert metrics["parse_rate_apa"] is None and metrics["der"] is None and metrics["mdd_precision"] is None
    assert metrics["mdd_ta"] == 3 and fmt(metrics["der"]) == "n/a"


def test_unparsed_mdd_answer_is_an_empty_hypothesis():
    m = compute_metrics([_mdd(1, "K AE T", "K AE T", None, "CAT")], {})
    assert m["wer"] == 1 and m["per"] == 1 and m["parse_rate_mdd"] == 0
    assert m["mdd_fr"] == 3 and m["frr"] == 1  # every correct phone rejected


def test_pcc_parsed_and_imputed_by_hand():
    records = [_apa(1, 1, 2), _apa(2, 2, 4), _apa(3, 3, 5), _apa(4, 4, 9), _apa(5, 5, None)]
    m = compute_metrics(records, dict.fromkeys(("accuracy", "fluency", "prosodic", "total"), 6.0))
    # parsed: sum dxdy 11, sum dx^2 5, sum dy^2 26 -> 11 / sqrt(130)
    assert m["pcc_accuracy"] == pytest.approx(11 / math.sqrt(130)) and m["pcc_accuracy_n"] == 4
    # imputed (unparsed -> training mean 6): 13 / sqrt(10 * 26.8)
    assert m["pcc_total_imputed"] == pytest.approx(13 / math.sqrt(268)) and m["pcc_total_imputed_n"] == 5
    assert 0 < m["pcc_accuracy_p"] < 0.05 and m["parse_rate_apa"] == pytest.approx(0.8)


def test_a_constant_imputed_column_is_undefined_without_a_warning():
    # found by tests/test_properties.py: np.std of three 0.1s is 1e-17, not 0, so pearsonr was reached and warned
    import warnings

    records = [_apa(1, 1, None), _apa(2, 5, None), _apa(3, 9, None)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = compute_metrics(records, dict.fromkeys(("accuracy", "fluency", "prosodic", "total"), 0.1))
    assert math.isnan(m["pcc_accuracy_imputed"]) and m["pcc_accuracy_imputed_n"] == 3


def test_normalisation_and_corpus_level_error_rate():
    assert normalise_words("Let's go, to the Rest-room!") == "LET'S GO TO THE REST ROOM"
    # corpus level: (1 + 0) / (1 + 3), not the mean of per-utterance rates (0.5)
    assert error_rate([["A"], ["B", "C", "D"]], [["X"], ["B", "C", "D"]]) == pytest.approx(0.25)
    assert error_rate([["A", "B"]], [["A", "X", "B", "C"]]) == pytest.approx(1.0)  # two insertions / 2


@pytest.mark.slow
def test_evaluate_cli_rescores_a_hand_written_predictions_file(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in MDD_CASES + [_apa(1, 1, 2), _apa(2, 2, 4), _apa(3, 3, 5),
                                                                       _apa(4, 4, 9)]))
    (tmp_path / "train_means.json").write_text(json.dumps(dict.fromkeys(("accuracy", "fluency", "prosodic",
                                                                         "total"), 6.0)))
    done = subprocess.run([sys.executable, "evaluate.py", f"predictions={path}"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["mdd_f1"] == pytest.approx(3 / 4) and metrics["per"] == pytest.approx(4 / 15)
    assert metrics["pcc_fluency"] == pytest.approx(11 / math.sqrt(130))
    assert json.loads(done.stdout[done.stdout.index("{"):])["wer"] == pytest.approx(0.2)
    assert score_file(path) == metrics


def test_mdd_takes_the_canonical_said_relation_from_the_annotation_not_from_an_alignment():
    # canonical AH AH, said AH: the annotation says the SECOND AH was deleted; Kaldi's tie-break (deletions early)
    # would put the deletion on the first
    assert kaldi_align(["AH", "AH"], ["AH"]) == [("AH", EPS), ("AH", "AH")]
    truth = ["AH", "<del>"]
    # recognised AH: with the truth, the first AH is accepted (TA) and the deleted second one, facing AH in the
    # canonical-recognised alignment, is accepted too: a missed deletion (FA). Re-aligned, the deletion would be on
    # the first AH, facing <eps> (TR + CD), and the second a TA.
    assert mdd_counts(["AH", "AH"], ["AH"], ["AH"], truth) == _hierarchy(ta=1, fa=1)
    assert mdd_counts(["AH", "AH"], ["AH"], ["AH"]) == _hierarchy(ta=1, cd=1)
    # not only ties: canonical S IH T, annotated "IH deleted, T said as IH". Re-aligning S IH T with S IH finds the
    # cheaper "T deleted" instead. Recognised S IH: truth -> S TA, IH deleted but heard (FA), T said IH heard IH (CD)
    assert mdd_counts("S IH T".split(), ["S", "IH"], ["S", "IH"], ["S", "<del>", "IH"]) == _hierarchy(ta=1, fa=1, cd=1)
    assert mdd_counts("S IH T".split(), ["S", "IH"], ["S", "IH"]) == _hierarchy(ta=2, cd=1)


def test_mdd_is_fu_et_al_s_counting_even_where_the_annotation_places_the_error_elsewhere():
    """mdd_* re-aligns canonical to annotated as Fu et al.'s align-text step does, whatever the reference carries;
    the annotation-index relation is the separately named mdd_annot_* variant."""
    with_truth = _mdd(1, "AH0 AH1", "AH", "AH")
    with_truth["reference"]["phone_truth"] = "AH <DEL>"  # the annotation: the SECOND AH deleted
    other = _mdd(2, "S IH T", "S IH", "S IH")
    other["reference"]["phone_truth"] = "S <del> IH"  # IH deleted, T said as IH; align-text finds "T deleted"
    m = compute_metrics([with_truth, other], {})
    fu = compute_metrics([_mdd(1, "AH0 AH1", "AH", "AH"), _mdd(2, "S IH T", "S IH", "S IH")], {})
    # Fu: AH AH/AH -> TA + CD (deletion placed early); S IH T/S IH -> 2 TA + CD
    assert {k: m[f"mdd_{k}"] for k in MDD_COUNTS} == _hierarchy(ta=3, cd=2) == {k: fu[f"mdd_{k}"] for k in MDD_COUNTS}
    assert m["mdd_f1"] == fu["mdd_f1"] == 1.0 and (m["far"], m["frr"], m["der"]) == (0.0, 0.0, 0.0)
    # the annotation's relation: AH: TA + FA; S: TA, IH: FA, T: CD
    assert {k: m[f"mdd_annot_{k}"] for k in MDD_COUNTS} == _hierarchy(ta=2, fa=2, cd=1)
    assert m["mdd_annot_recall"] == pytest.approx(1 / 3) and m["mdd_annot_far"] == pytest.approx(2 / 3)
    assert "mdd_annot_f1" not in fu  # references without phone_truth: no annotation variant, nothing made up
    assert normalise_truth("ah0 <DEL> <UNK> AE1* T") == ["AH", "<del>", "<unk>", "AE*", "T"]


def test_per_present_skips_unparsed_answers_as_compute_wer_present_does():
    parsed = _mdd(1, "K AE T", "K AE T", "K AH T")
    unparsed = _mdd(2, "S IH T", "S IH T", "S IH T")
    unparsed["prediction"] = None
    m = compute_metrics([parsed, unparsed], {})
    assert m["per"] == pytest.approx(4 / 6)  # the unparsed answer: 3 deletions, counted
    assert m["per_present"] == pytest.approx(1 / 3)  # only the utterance with an answer
    assert m["wer_present"] == 0.0 and m["wer"] == pytest.approx(0.5)


def test_a_phone_truth_that_contradicts_the_references_is_an_error():
    with pytest.raises(ValueError, match="2 canonical"):
        mdd_counts(["AH", "T"], ["AH"], ["AH"], ["AH"])
    with pytest.raises(ValueError, match="does not give the annotated phones"):
        mdd_counts(["AH", "T"], ["AH"], ["AH"], ["AH", "D"])


def test_every_pcc_carries_its_n_and_p_and_a_non_significant_one_is_marked():
    from apa.metrics import NOT_SIGNIFICANT, coverage, fmt_pcc

    records = [_apa(i, h, p) for i, (h, p) in enumerate([(1, 2), (2, 4), (3, 5), (4, 9)])]
    records.append(_apa(9, 5, None))  # unparsed: outside the PCC's n, counted as such
    m = compute_metrics(records, {a: 6.0 for a in ("accuracy", "fluency", "prosodic", "total")})
    assert m["pcc_fluency_n"] == m["n_apa_parsed"] == 4 and m["n_apa"] == 5
    assert m["pcc_fluency_p"] == pytest.approx(0.0352, abs=1e-4)  # r = 0.9648, n = 4, two-sided
    assert fmt_pcc(m, "pcc_fluency") == "0.965"  # p < 0.05: unmarked
    assert fmt_pcc({"pcc_total": 0.3, "pcc_total_p": 0.2}, "pcc_total") == "0.300" + NOT_SIGNIFICANT
    assert fmt_pcc({"pcc_total": None, "pcc_total_p": None}, "pcc_total") == "n/a"
    assert coverage(m)[2] == "4/5"  # the column beside the PCCs: parsed APA answers / answers


@pytest.mark.slow
def test_an_empty_predictions_file_is_an_error_not_an_empty_score(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text("\n")
    done = subprocess.run([sys.executable, "evaluate.py", f"predictions={path}"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and "holds no prediction: nothing to score" in done.stderr
    assert not (tmp_path / "metrics.json").exists()
