"""Cases mode on the tiny model: every case of the matrix recorded, failures included, and summarized."""

import json

import pytest

from apa.bench.cli import main

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out


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
