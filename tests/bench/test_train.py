"""Train mode on the tiny model: real optimizer steps, figures that add up."""

import json

import pytest

from apa.bench.cli import main

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out


def test_train_mode_reports_consistent_figures(tmp_path, capsys):
    out = tmp_path / "bench.json"
    result = main(["experiment=demo", "data.limit=4", "trainer.per_device_train_batch_size=2",
                   "trainer.gradient_accumulation_steps=2", "--steps", "2", "--warmup", "0", "--json", str(out)])
    assert json.loads(out.read_text())["steps_measured"] == 2 == result["steps_measured"]
    assert result["samples_per_s"] == pytest.approx(4 * result["steps_per_s"])  # batch 2 x accumulation 2
    assert result["tokens_per_s"] == pytest.approx(result["text_tokens_per_s"] + result["audio_tokens_per_s"])
    assert 0 <= result["padding_share"] < 1 and result["peak_memory_gb"] > 0.1
    corpus = result["padding_share_full_corpus_estimate"]
    assert 0 < corpus["group_by_length"] < corpus["random"] < 1  # sorting inside each step of 4 cuts padding
    assert result["mfu"] is None  # no GPU, no peak to compare with
    assert not {"mfu_matmul_floor", "matmul_floor_tflops_per_s"} & result.keys()  # one FLOP model, the counted one
    # the composed config's epochs (experiment=demo: trainer=cpu_demo, 2) over the full corpus's 5000 examples each
    assert result["projected_epochs"] == 2
    assert result["projected_full_corpus_min"] == pytest.approx(2 * 5000 / result["samples_per_s"] / 60)
    flops = result["flops_per_example"]
    assert flops["total"] == pytest.approx(sum(v for k, v in flops.items() if k != "total"))
    assert min(flops["lm_attention"], flops["lm_head"], flops["lora_matmul"], flops["audio_attention"]) > 0
    assert result["model_tflops_per_s"] == pytest.approx(flops["total"] * result["samples_per_s"] / 1e12)
    assert flops["total"] > flops["lm_matmul"] + flops["audio_matmul"]  # more than the frozen matmuls (the old floor)
    assert "projected_full_corpus_min" in capsys.readouterr().out
