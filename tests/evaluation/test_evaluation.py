"""Evaluation of trained run folders epoch by epoch, resumable predictions, and the comparison of runs."""

import csv
import json
import shutil

import matplotlib.pyplot as plt
import pytest

from apa.checkpoint.adapters import load_baseline
from apa.evaluation.evaluate import weights_digest
from apa.evaluation.examples import evaluation_examples
from apa.evaluation.predictions import generate_predictions
from apa.reporting.compare import compare
from tests.conftest import FAST_EVAL, compose_eval_config

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out


@pytest.fixture(scope="module")
def evaluated(demo_sweep):
    """The sweep of conftest.demo_sweep, already evaluated and compared by its evaluate_and_compare callback."""
    return demo_sweep


def test_every_checkpoint_is_evaluated_into_a_table3_shaped_table(evaluated):
    for run in sorted(p.parent for p in evaluated.glob("*/training_config.json")):
        rows = list(csv.DictReader((run / "eval" / "epochs.csv").open()))
        assert [r["checkpoint"] for r in rows] == ["checkpoint-epoch-1", "checkpoint-epoch-2", "final_model"]
        assert [r["epoch"] for r in rows] == ["1", "2", "final"]
        md = (run / "eval" / "epochs.md").read_text()
        assert "paper (arXiv 2509.02915, LoRA-only) | 3 | 0.656" in md and "this run (checkpoint-epoch-2)" in md
        assert "| 4/4 (limit 4) |" in md  # utterances scored / in the (limited) test split
        for checkpoint in ("checkpoint-epoch-1", "checkpoint-epoch-2", "final_model"):
            metrics = json.loads((run / "eval" / checkpoint / "metrics.json").read_text())
            assert metrics["n_apa"] == metrics["n_mdd"] == 4  # data.limit=4 from the run's own config
            split = json.loads((run / "eval" / checkpoint / "test_split.json").read_text())
            assert split["limit"] == 4 and split["utterances_in_split"] == 4 and split["utterances_skipped"] == 0
            assert metrics["n_utterances_scored"] == metrics["n_utterances_in_split"] == 4
            assert metrics["n_phones_scored"] == metrics["n_phones_in_split"] == split["phones_in_split"] > 0
            records = [json.loads(x) for x in (run / "eval" / checkpoint / "predictions.jsonl").open()]
            assert len(records) == 8 and {r["task"] for r in records} == {"apa", "mdd"}
            assert all(len(r["raw"]) > 0 for r in records)
            for r in records:
                assert set(r) == {"id", "task", "reference", "prediction", "raw"}
                keys = {"accuracy", "fluency", "prosodic", "total"} if r["task"] == "apa" else {
                    "word_transcript", "phoneme_transcript", "canonical_phones", "phone_truth"}
                assert set(r["reference"]) == keys


def test_final_model_reuses_the_predictions_of_the_identical_last_epoch(evaluated):
    for run in sorted(p.parent for p in evaluated.glob("*/training_config.json")):
        eval_dir = run / "eval"
        assert weights_digest(run / "final_model") == weights_digest(run / "checkpoint-epoch-2")
        assert weights_digest(run / "checkpoint-epoch-1") != weights_digest(run / "checkpoint-epoch-2")
        copied = (eval_dir / "final_model" / "predictions.jsonl").read_bytes()
        assert copied == (eval_dir / "checkpoint-epoch-2" / "predictions.jsonl").read_bytes()
        assert "reusing its predictions" in (run / "train.log").read_text()


def test_interrupted_generation_resumes_to_an_identical_file(tmp_path):
    cfg = compose_eval_config("model=tiny", "data=sample", "data.limit=3", "prompts=terse", *FAST_EVAL)
    model, processor, _ = load_baseline(cfg.model, cfg.baseline, cfg.seed)  # the untrained model, as the paper ran it
    rows = evaluation_examples(cfg, processor.tokenizer.audio_token, cfg.baseline.control_tokens)
    full = tmp_path / "full" / "predictions.jsonl"
    generate_predictions(model, processor, rows, full, 2, dict(cfg.max_new_tokens))
    lines = full.read_bytes().splitlines(keepends=True)
    assert len(lines) == 6
    # a crash after two lines, half-way through writing the third
    part = tmp_path / "part" / "predictions.jsonl"
    part.parent.mkdir()
    part.write_bytes(b"".join(lines[:2]) + lines[2][: len(lines[2]) // 2])
    generate_predictions(model, processor, rows, part, 2, dict(cfg.max_new_tokens))
    assert part.read_bytes() == full.read_bytes()


def test_comparison_writes_tables_and_valid_plots(evaluated, tmp_path):
    # the callback compared the sweep when it ended; compare() again on a copy to check its output in detail
    assert (evaluated / "comparison.md").exists() and (evaluated / "training_loss.png").exists()
    out = tmp_path / "cmp"
    shutil.copytree(evaluated, out / "sweep")
    table = compare([out / "sweep"])
    rows = list(csv.DictReader((out / "sweep" / "comparison.csv").open()))
    runs = [r for r in rows if not r["run"].startswith("paper (")]
    assert len(runs) == 6 and {r["lora"] for r in runs} == {"pretrained_r320", "fresh_r64"}
    assert all(int(r["trainable_params"]) > 0 and float(r["final_train_loss"]) > 0 for r in runs)
    assert len(rows) - len(runs) == 9  # the paper's Table 3: LoRA-only epochs 0-4, Unfreeze 1-4
    assert "fresh_r64" in table and "0.724" in (out / "sweep" / "comparison.md").read_text()
    assert "4/4 (limit 4)" in table and all(r["n_utterances_in_split"] == "4" for r in runs)
    pngs = sorted(p.name for p in (out / "sweep").glob("*.png"))
    assert pngs == ["metrics_per_epoch.png", "scatter_fresh_r64_1.png", "scatter_pretrained_r320_0.png",
                    "training_loss.png"]
    for png in (out / "sweep").glob("*.png"):
        assert plt.imread(png).shape[0] > 100


def test_a_signal_during_the_callbacks_evaluation_is_one_line_with_its_exit_status(tmp_path, capsys, monkeypatch):
    """Ctrl-C or SIGTERM while the sweep callback evaluates a job (multirun.sh, experiment=table3_*): evaluation
    stops with Interrupted, saying what it kept; Hydra catches only Exception, so it ended in a traceback."""
    from hydra.core.utils import JobReturn, JobStatus
    from omegaconf import OmegaConf

    from apa.callbacks import EvaluateAndCompare
    from apa.errors import Interrupted

    callback = EvaluateAndCompare(compare=False, report=False)

    def stopped_by_sigterm(run_dir):
        raise Interrupted(f"stopped by SIGTERM: 2 answers kept in {run_dir}/eval", signum=15)

    monkeypatch.setattr(callback, "_evaluate", stopped_by_sigterm)
    config = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(tmp_path)}}})
    with pytest.raises(SystemExit) as stopped:
        callback.on_job_end(config, JobReturn(status=JobStatus.COMPLETED))
    assert stopped.value.code == 143
    assert capsys.readouterr().err.strip() == f"error: stopped by SIGTERM: 2 answers kept in {tmp_path}/eval"


def test_a_failed_evaluation_in_the_callback_ends_the_sweep_with_an_error(tmp_path, capsys):
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import JobReturn, JobStatus
    from omegaconf import OmegaConf

    from apa.callbacks import EvaluateAndCompare
    from tests.conftest import CONF

    callback = EvaluateAndCompare(compare=False, report=False)
    config = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(tmp_path)}}})  # no run folder there
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        callback.on_job_end(config, JobReturn(status=JobStatus.COMPLETED))
    assert callback.failures == [str(tmp_path)]
    with pytest.raises(SystemExit) as stopped:
        callback.on_multirun_end(config)
    assert stopped.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: evaluate_and_compare failed for: {tmp_path}")
