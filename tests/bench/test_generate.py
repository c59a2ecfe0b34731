"""Generate mode on the tiny model: evaluation's batching and generation, answers forced to their reference's
length, and the projections of a full test split and a checkpoint=all evaluation."""

import pytest

from apa.bench.cli import main

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out


def test_generate_mode_forces_reference_lengths_and_projects_the_test_split(monkeypatch, capsys):
    from transformers import GenerationMixin

    generated = []
    generate = GenerationMixin.generate

    def recording(self, *args, **kwargs):
        out = generate(self, *args, **kwargs)
        generated.append((out.shape[1] - kwargs["input_ids"].shape[1], kwargs["max_new_tokens"],
                          kwargs["min_new_tokens"]))
        return out

    monkeypatch.setattr(GenerationMixin, "generate", recording)
    result = main(["experiment=demo", "data.limit=2", "--mode", "generate", "--budgets", "300", "100000"])
    assert result["answers"] == 4
    assert all(new == high == low for new, high, low in generated)  # exactly the forced length, never shorter
    apa, mdd = result["answer_tokens"]["apa"], result["answer_tokens"]["mdd"]
    assert 0 < apa["mean"] <= 40 and apa["mean"] < mdd["mean"] <= 160  # evaluation's max_new_tokens caps them
    small, large = result["budgets"]["300"], result["budgets"]["100000"]
    assert small["batches"] == 4 and large["batches"] == 2  # one answer per batch vs one batch per task
    for figures in (small, large):
        assert figures["answers_per_s"] == pytest.approx(4 / figures["seconds"])
        per_answer = figures["seconds_per_answer"]
        assert figures["projected_test_split_min"] == pytest.approx(2500 * (per_answer["apa"] + per_answer["mdd"])
                                                                    / 60)
    best = result["budgets"][str(result["best_budget"])]["projected_test_split_min"]
    assert result["projected_full_evaluation_min"] == pytest.approx(2 * best + result["projected_features_min"])
    assert "projected_test_split_min" in capsys.readouterr().out
