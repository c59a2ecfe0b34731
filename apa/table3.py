"""The paper's Table 3 and the helpers that lay results out beside it (no heavy imports: compare uses it)."""

from __future__ import annotations

import math

# arXiv 2509.02915, Table 3, LoRA-only rows: PCC acc/flu/pros/total, WER, PER, F1 (P, R). Epoch 0 = no training.
PAPER_TABLE3 = {
    0: (-0.041, -0.017, -0.049, -0.104, 0.97, 0.792, 0.143, 0.154, 0.134),
    1: (0.547, 0.585, 0.567, 0.544, 0.15, 0.137, 0.686, 0.689, 0.682),
    2: (0.637, 0.726, 0.709, 0.662, 0.139, 0.118, 0.722, 0.725, 0.719),
    3: (0.656, 0.727, 0.711, 0.675, 0.14, 0.114, 0.724, 0.728, 0.721),
    4: (0.645, 0.733, 0.714, 0.668, 0.148, 0.121, 0.721, 0.723, 0.72),
}
TABLE_COLUMNS = ("pcc_accuracy", "pcc_fluency", "pcc_prosodic", "pcc_total", "wer", "per",
                 "mdd_f1", "mdd_precision", "mdd_recall")
# What every table calls `mdd_f1`, and the note under it (docs/metrics.md, MDD)
MDD_F1_LABEL = "MDD F1 (standard TA/FR/FA/TR hierarchy)"
TABLE_HEADERS = ("PCC acc", "PCC flu", "PCC pros", "PCC total", "WER", "PER", MDD_F1_LABEL, "MDD P", "MDD R")
TABLE_NOTE = ("Our rows: MDD P/R/F1 counted as Fu et al.'s scorer counts them (docs/metrics.md). Paper rows: the "
              "paper's own F1 (P, R), whose definition is unpublished; no metric here claims to be it.")

# How much of the test split each row scored (metrics.json's n_*_scored / n_*_in_split)
COVERAGE_KEYS = ("n_utterances_scored", "n_utterances_in_split", "n_phones_scored", "n_phones_in_split")
COVERAGE_HEADERS = ("utterances scored", "phones scored")
COVERAGE_NOTE = ("Scored: utterances and canonical phones scored / in the test split ('?': split size not recorded, "
                 "as in evaluations older than test_split.json; 'limit N': data.limit made the split its first N "
                 "utterances).")


def coverage(metrics: dict) -> tuple[str, str]:
    """('2500/2500', '47000/47000') for a table row: scored / in the split, per utterance and per phone."""
    cells = []
    for unit in ("utterances", "phones"):
        scored, total = metrics.get(f"n_{unit}_scored"), metrics.get(f"n_{unit}_in_split")
        cells.append("n/a" if scored is None else f"{scored}/{'?' if total is None else total}")
    if metrics.get("split_limit"):
        cells[0] += f" (limit {metrics['split_limit']})"
    return cells[0], cells[1]


def epoch_of(checkpoint: str) -> str:
    """'checkpoint-epoch-2' -> '2'; 'final_model' -> 'final'."""
    return checkpoint.rsplit("-", 1)[-1] if checkpoint.startswith("checkpoint-epoch-") else "final"


def fmt(value) -> str:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.3f}"
