"""Every metric against values computed by hand (the same cases are worked through in docs/metrics.md)."""

import json
import math
import subprocess
import sys

import pytest

from apa.evaluation import score_file
from apa.metrics import compute_metrics, error_rate, mdd_counts, normalise_words
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
]


def test_mdd_hierarchy_counts_by_hand():
    assert mdd_counts("DH IH S IH Z".split(), "D IH S IH Z".split(), "D IH IH Z".split()) == {
        "ta": 3, "fr": 1, "fa": 0, "tr": 1, "cd": 1, "de": 0}
    assert mdd_counts("K AE T".split(), "K AH T".split(), "K EH T S".split()) == {
        "ta": 2, "fr": 0, "fa": 0, "tr": 1, "cd": 0, "de": 1}


def test_all_metrics_on_hand_computed_cases():
    m = compute_metrics(MDD_CASES, {})
    # TA 6, FR 1, FA 1, TR 2 (CD 1, DE 1)
    assert m["mdd_precision"] == pytest.approx(2 / 3) and m["mdd_recall"] == pytest.approx(2 / 3)
    assert m["mdd_f1"] == pytest.approx(2 / 3)
    assert m["far"] == pytest.approx(1 / 3) and m["frr"] == pytest.approx(1 / 7) and m["der"] == pytest.approx(0.5)
    # PER: 1 deletion / 5 + (1 sub + 1 insertion) / 3 + 1 sub / 2 -> 4 / 10
    assert m["per"] == pytest.approx(0.4)
    # phone recognition: 7 hits, 10 predicted, 10 annotated
    assert (m["phone_precision"], m["phone_recall"], m["phone_f1"]) == pytest.approx((0.7, 0.7, 0.7))
    # WER after normalisation: only BE -> BEE is wrong, 1 / 4 words
    assert m["wer"] == pytest.approx(0.25)
    assert m["parse_rate_mdd"] == 1 and m["n_mdd"] == 3


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


def test_normalisation_and_corpus_level_error_rate():
    assert normalise_words("Let's go, to the Rest-room!") == "LET'S GO TO THE REST ROOM"
    # corpus level: (1 + 0) / (1 + 3), not the mean of per-utterance rates (0.5)
    assert error_rate([["A"], ["B", "C", "D"]], [["X"], ["B", "C", "D"]]) == pytest.approx(0.25)
    assert error_rate([["A", "B"]], [["A", "X", "B", "C"]]) == pytest.approx(1.0)  # two insertions / 2


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
    assert metrics["mdd_f1"] == pytest.approx(2 / 3) and metrics["per"] == pytest.approx(0.4)
    assert metrics["pcc_fluency"] == pytest.approx(11 / math.sqrt(130))
    assert json.loads(done.stdout[done.stdout.index("{"):])["wer"] == pytest.approx(0.25)
    assert score_file(path) == metrics
