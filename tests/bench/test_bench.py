"""apa.bench.cli on the tiny model: real optimizer steps and the data pipeline, figures that add up."""

import json

import pytest

from apa.bench.cli import flop_breakdown, flops_per_example, main


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
    assert result["mfu"] is None and result["mfu_matmul_floor"] is None  # no GPU, no peak to compare with
    # the composed config's epochs (experiment=demo: trainer=cpu_demo, 2) over the full corpus's 5000 examples each
    assert result["projected_epochs"] == 2
    assert result["projected_full_corpus_min"] == pytest.approx(2 * 5000 / result["samples_per_s"] / 60)
    flops = result["flops_per_example"]
    assert flops["total"] == pytest.approx(sum(v for k, v in flops.items() if k != "total"))
    assert min(flops["lm_attention"], flops["lm_head"], flops["lora_matmul"], flops["audio_attention"]) > 0
    assert result["model_tflops_per_s"] > result["matmul_floor_tflops_per_s"]
    assert "projected_full_corpus_min" in capsys.readouterr().out


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


def test_cases_mode_records_every_case_and_its_failures(tmp_path):
    cases = tmp_path / "cases.txt"
    cases.write_text("# name mode overrides\n"
                     "b2 train trainer.per_device_train_batch_size=2 trainer.gradient_accumulation_steps=2\n"
                     "broken train trainer.no_such_option=1\n"
                     "gen generate\n")
    results, summary = tmp_path / "results.jsonl", tmp_path / "summary.md"
    main(["experiment=demo", "data.limit=2", "--mode", "cases", "--cases", str(cases), "--results", str(results),
          "--summary", str(summary), "--steps", "1", "--warmup", "1", "--budgets", "100000"])
    entries = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(e["name"], e["ok"]) for e in entries] == [("b2", True), ("broken", False), ("gen", True)]
    # 4 examples (2 utterances) for 2 steps of 2 x 2: the training set repeated twice, so every step is full
    assert entries[0]["result"]["config"]["accumulation"] == 2 and entries[0]["result"]["train_set_repeats"] == 2
    assert "no_such_option" in entries[1]["error"]
    table = summary.read_text()
    assert "| b2 | pretrained_r320 | 2 x 2 |" in table and "| broken |" in table
    assert "| gen | pretrained_r320 | 100000 |" in table


def test_flop_breakdown_counts_attention_lora_and_recomputation():
    params = {"groups": {"language_model": {"total": 1000}, "lora": {"total": 50}, "audio_encoder": {"total": 90},
                         "audio_projector": {"total": 10}}, "embedding_params": 200}
    dims = {"lm_layers": 2, "lm_attention_width": 8, "audio_layers": 1, "audio_width": 4}
    # examples of 10 and 20 tokens: mean 15, mean square 250; 3 audio tokens
    plain = flop_breakdown(params, dims, [10, 20], 3, checkpointing=False, unfrozen=False, answer_tokens=5)
    assert plain == {"lm_matmul": 4 * 800 * 15, "lm_head": 4 * 200 * 5, "lora_matmul": 6 * 50 * 15,
                     "lm_attention": 3 * 2 * 2 * 8 * 250, "audio_matmul": 2 * 100 * 3,
                     "audio_attention": 4 * 1 * 4 * 9, "total": plain["total"]}
    assert plain["total"] == sum(v for k, v in plain.items() if k != "total")
    both = flop_breakdown(params, dims, [10, 20], 3, checkpointing=True, unfrozen=True)
    assert (both["lm_matmul"], both["lora_matmul"], both["lm_attention"]) == (6 * 800 * 15, 8 * 50 * 15,
                                                                             4 * 2 * 2 * 8 * 250)
    assert (both["audio_matmul"], both["audio_attention"]) == (6 * 100 * 3, 3 * 4 * 1 * 4 * 9)
