"""Sampler mode: the training orders compared on the synthetic full-size corpus, no model. (What the orders do to
steps and micro-batches, asserted in detail: tests/training/test_sampling.py.)"""

import pytest

from apa.bench.cli import main

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out


def test_sampler_mode_compares_the_orders_on_the_synthetic_corpus(capsys):
    result = main(["model=tiny", "--mode", "sampler", "--epochs", "2"])
    assert result["config"]["batch"] == 8 and result["config"]["accumulation"] == 8  # paper_table3
    # the prompts the recipe trains with (prompts=paper, the default), counted by the model's tokenizer: the paper's
    # APA prompt is its long rubric, about twice prompts=concise's
    assert result["config"]["prompts"] == "paper" and result["config"]["prompt_tokens"]["apa"] > 450
    assert 100 < result["config"]["prompt_tokens"]["mdd"] < result["config"]["prompt_tokens"]["apa"]
    assert result["corpus"]["examples"] == 5000
    new, old, random = result["step_sorted"], result["hf_grouped"], result["random"]
    assert new["steps"] == 2 * 78
    assert new["padding_share"] < random["padding_share"] and new["single_task_steps"] < old["single_task_steps"]
    printed = capsys.readouterr().out
    assert "single-task steps" in printed and "HF length grouping (before)" in printed
