"""The synthetic full-size corpus has the length distribution its docstring (and docs/benchmarks.md) states."""

from statistics import mean

import pytest

from apa.bench.synthetic import synthetic_corpus
from apa.sft.lengths import audio_tokens

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out


def test_synthetic_corpus_has_the_documented_distribution():
    rows = synthetic_corpus()
    assert len(rows) == 5000 and sum(r["task"] == "apa" for r in rows) == 2500
    seconds = [r["seconds"] for r in rows[::2]]
    assert min(seconds) >= 1.6 and max(seconds) <= 20 and mean(seconds) == pytest.approx(4.3, abs=0.1)
    assert len(set(seconds)) == 2500  # continuous draws, not resampled ties
    assert all(r["audio"] == audio_tokens(r["seconds"]) for r in rows)
    assert all(r["total"] == r["prompt"] + r["audio"] + r["answer"] for r in rows)
    apa, mdd = rows[0::2], rows[1::2]
    assert all(a["seconds"] == m["seconds"] and a["prompt"] - m["prompt"] == 189 for a, m in zip(apa, mdd, strict=True))
    assert synthetic_corpus() == rows  # fixed seed
