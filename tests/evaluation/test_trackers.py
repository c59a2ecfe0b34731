"""Evaluation metrics in the run's TensorBoard log, beside the training loss (apa.evaluation.trackers), read back with
TensorBoard's own reader; and trainer.report_to passed through (W&B missing: refused before anything loads)."""

import importlib.util
import json
import logging
import math
import shutil

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from apa.errors import UserError
from apa.evaluation.evaluate import evaluate
from apa.evaluation.trackers import log_evaluation, trackers
from apa.training.start import start
from tests.conftest import FAST_EVAL, compose_config, compose_eval_config

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out


def scalars(logs) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of a TensorBoard run folder, as TensorBoard reads it (all points kept)."""
    reader = EventAccumulator(str(logs), size_guidance={"scalars": 0})
    reader.Reload()
    return {tag: [(e.step, e.value) for e in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]}


def expected_series(run) -> dict[str, list[tuple[int, float]]]:
    """What the log must hold, from the run folder itself: each evaluated checkpoint's numbers from its metrics.json at
    the step its trainer_state.json (final_model: the run record) names; final_model at the last epoch's step adds no
    second point."""
    record = json.loads((run / "training_config.json").read_text())
    steps = {name: json.loads((run / name / "trainer_state.json").read_text())["global_step"]
             for name in ("checkpoint-epoch-1", "checkpoint-epoch-2")}
    steps["final_model"] = record["global_steps"]
    assert steps == {"checkpoint-epoch-1": 1, "checkpoint-epoch-2": 2, "final_model": 2}  # 8 examples, 4 x 2 a step
    series: dict[str, list[tuple[int, float]]] = {}
    for checkpoint in ("checkpoint-epoch-1", "checkpoint-epoch-2"):
        metrics = json.loads((run / "eval" / checkpoint / "metrics.json").read_text())
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                group = "test" if key in ("pcc_accuracy", "pcc_fluency", "pcc_prosodic", "pcc_total", "wer", "per",
                                          "mdd_precision", "mdd_recall", "mdd_f1", "parse_rate_apa",
                                          "parse_rate_mdd") else "test_detail"
                series.setdefault(f"{group}/{key}", []).append((steps[checkpoint], float(value)))
    return series


def assert_log_holds(run, expected) -> None:
    found = scalars(run / "logs")
    ours = {tag: points for tag, points in found.items() if tag.split("/")[0] in ("test", "test_detail")}
    assert sorted(ours) == sorted(expected)
    for tag, points in expected.items():
        assert [step for step, _ in ours[tag]] == [step for step, _ in points], tag  # one point per step
        values = zip(ours[tag], points, strict=True)
        assert all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6) for (_, a), (_, b) in values), tag
    assert [step for step, _ in found["train/loss"]] == [1, 2]  # the trainer's own series, untouched beside them
    assert len(list((run / "logs").glob("events.out.tfevents.*.test"))) == 1


def runs(sweep):
    return sorted(p.parent for p in sweep.glob("*/training_config.json"))


def copy_run(sweep, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs(sweep)[-1], run)
    return run


def reevaluate(run, checkpoint: str):
    overrides = [f"run_dir={run}", f"checkpoint={checkpoint}", *FAST_EVAL]  # the sweep's evaluation settings
    return evaluate(compose_eval_config(*overrides), overrides, run / "eval")


def test_every_evaluated_checkpoint_is_in_the_runs_tensorboard_log_at_its_step(demo_sweep):
    for run in runs(demo_sweep):  # trained with the default trainer.report_to=[tensorboard]
        expected = expected_series(run)
        assert {"test/wer", "test/per", "test/parse_rate_apa", "test/parse_rate_mdd", "test_detail/n_apa"} <= set(
            expected)
        assert_log_holds(run, expected)


def test_reevaluating_leaves_one_point_per_step_and_keeps_a_deleted_checkpoints_point(demo_sweep, tmp_path):
    run = copy_run(demo_sweep, tmp_path)
    expected = expected_series(run)
    before = list((run / "logs").glob("events.out.tfevents.*.test"))
    shutil.rmtree(run / "checkpoint-epoch-1")  # evaluated already: its step is in its fingerprint.json
    for checkpoint in ("checkpoint-epoch-2", "final_model"):
        reevaluate(run, checkpoint)
        assert_log_holds(run, expected)
    assert not any(p.exists() for p in before)  # replaced, not added to


def test_a_final_model_only_run_gets_its_point_at_the_final_step(demo_sweep, tmp_path):
    run = copy_run(demo_sweep, tmp_path)
    for checkpoint in ("checkpoint-epoch-1", "checkpoint-epoch-2"):  # as experiment=overfit leaves a run
        shutil.rmtree(run / checkpoint)
        shutil.rmtree(run / "eval" / checkpoint)
    reevaluate(run, "final_model")
    metrics = json.loads((run / "eval" / "final_model" / "metrics.json").read_text())
    found = scalars(run / "logs")
    assert found["test/wer"] == [(2, pytest.approx(metrics["wer"]))]
    assert found["test_detail/n_apa"] == [(2, 4.0)]


def test_report_to_passes_through(demo_sweep, tmp_path, caplog):
    assert trackers("none") == [] and trackers(None) == [] and trackers("tensorboard") == ["tensorboard"]
    assert trackers(["tensorboard", "mlflow"]) == ["tensorboard", "mlflow"]
    run = copy_run(demo_sweep, tmp_path)
    record = json.loads((run / "training_config.json").read_text())
    record["config"]["trainer"]["report_to"] = ["mlflow"]
    (run / "training_config.json").write_text(json.dumps(record))
    before = sorted(p.name for p in (run / "logs").iterdir())
    with caplog.at_level(logging.INFO, logger="apa.evaluation.trackers"):
        log_evaluation(run, run / "eval", ["final_model"], own=True)
    assert "trainer.report_to lists mlflow: evaluation reports only to tensorboard and wandb" in caplog.text
    assert sorted(p.name for p in (run / "logs").iterdir()) == before  # not asked for TensorBoard: left alone


def test_wandb_without_wandb_installed_is_refused_before_anything_loads(demo_sweep, tmp_path, monkeypatch):
    assert importlib.util.find_spec("wandb") is None, "this test expects the locked environment, which has no wandb"
    with pytest.raises(UserError, match=r"the training reports to wandb .* `pip install -e '\.\[wandb\]'`, or drop"):
        start(compose_config("experiment=demo", "trainer.report_to=[tensorboard,wandb]"), tmp_path / "new")
    assert not (tmp_path / "new").exists()

    run = copy_run(demo_sweep, tmp_path)
    record = json.loads((run / "training_config.json").read_text())
    record["config"]["trainer"]["report_to"] = ["tensorboard", "wandb"]
    (run / "training_config.json").write_text(json.dumps(record))
    files = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    with pytest.raises(UserError, match=r"reports to wandb .* `pip install -e '\.\[wandb\]'`, or set WANDB_MODE="
                                        r"disabled to evaluate without W&B"):
        reevaluate(run, "final_model")
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == files
    monkeypatch.setenv("WANDB_MODE", "disabled")  # W&B off: the evaluation goes on, TensorBoard as asked
    reevaluate(run, "final_model")
    assert_log_holds(run, expected_series(run))


def test_an_evaluation_on_other_data_has_series_of_its_own(demo_sweep, tmp_path):
    run = copy_run(demo_sweep, tmp_path)
    own = {tag: points for tag, points in scalars(run / "logs").items() if tag.startswith("test")}
    overrides = [f"run_dir={run}", "checkpoint=final_model", "data.limit=2", *FAST_EVAL]
    results = evaluate(compose_eval_config(*overrides), overrides, run / "eval")
    prefix = results.folder.name  # eval-sample-<digest>: the run's own test split is test/
    assert prefix.startswith("eval-sample-") and len(list((run / "logs").glob(f"events.out.tfevents.*.{prefix}"))) == 1
    found = scalars(run / "logs")
    assert found[f"{prefix}/wer"] == [(2, pytest.approx(results["final_model"]["wer"]))]
    assert found[f"{prefix}_detail/n_apa"] == [(2, 2.0)]
    assert {tag: points for tag, points in found.items() if tag.startswith("test")} == own
