"""apa.bench on the tiny model: real optimizer steps and the data pipeline, figures that add up."""

import json

import pytest

from apa.bench import flops_per_example, main


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
    assert result["projected_paper_table3_3_epochs_min"] == pytest.approx(15000 / result["samples_per_s"] / 60)
    assert "projected_paper_table3_3_epochs_min" in capsys.readouterr().out


def test_data_mode_measures_collate_throughput():
    result = main(["experiment=demo", "data.limit=2", "--mode", "data", "--workers", "0", "--batches", "2"])
    assert result["batch"] == 8 and result["feature_cache_mb"] > 0
    for state in ("cold", "warm"):
        assert result[state]["workers=0"]["samples_per_s"] > 0


def test_sampler_mode_compares_the_orders_on_the_synthetic_corpus(capsys):
    result = main(["--mode", "sampler", "--epochs", "2"])
    assert result["config"]["batch"] == 8 and result["config"]["accumulation"] == 8  # paper_table3
    assert result["corpus"]["examples"] == 5000
    new, old, random = result["step_sorted"], result["hf_grouped"], result["random"]
    assert new["steps"] == 2 * 78
    assert new["padding_share"] < random["padding_share"] and new["single_task_steps"] < old["single_task_steps"]
    printed = capsys.readouterr().out
    assert "single-task steps" in printed and "HF length grouping (before)" in printed


def test_flops_count_follows_checkpointing_and_unfreezing():
    params = {"groups": {"language_model": {"total": 1000}, "audio_encoder": {"total": 90},
                         "audio_projector": {"total": 10}}, "embedding_params": 200}
    # 800 matmul weights x 4 (forward + activation backward) x 10 tokens; audio forward only: 100 x 2 x 3 tokens
    assert flops_per_example(params, 10, 3, checkpointing=False, unfrozen=False) == 4 * 800 * 10 + 2 * 100 * 3
    assert flops_per_example(params, 10, 3, checkpointing=True, unfrozen=True) == 6 * 800 * 10 + 6 * 100 * 3
