"""Evaluations are tied to what they evaluated: the run's own config with the command's overrides applied (never
dropped), a fingerprint that refuses to mix two evaluations in one folder, one evaluation per folder at a time, and
predictions files whose every line is one answer."""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys

import pytest

from apa.errors import UserError
from apa.evaluation.evaluate import evaluate
from apa.evaluation.predictions import EvaluationError, score_file
from apa.run_folder import RunLock
from apa.training.recipe import train
from tests.conftest import FAST_EVAL, REPO, compose_config, compose_eval_config

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out

RUN = ("experiment=demo", "prompts=terse", "data.limit=2", "trainer.num_train_epochs=1", "trainer.report_to=[]")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("integrity") / "run"
    train(compose_config(*RUN), run)
    return run


def _evaluate(run, *overrides):
    overrides = (*FAST_EVAL, *overrides)
    return evaluate(compose_eval_config(f"run_dir={run}", *overrides), list(overrides), run / "eval")


def test_a_second_evaluation_with_other_settings_is_refused_not_mixed(run_dir):
    first = _evaluate(run_dir)["final_model"]
    predictions = run_dir / "eval" / "final_model" / "predictions.jsonl"
    before = predictions.read_bytes()
    fingerprint = json.loads((run_dir / "eval" / "final_model" / "fingerprint.json").read_text())
    assert set(fingerprint) == {"test_set", "prompts", "weights", "model", "generation", "data", "versions",
                                "training_versions", "global_step", "launches"}
    assert fingerprint["global_step"] == 1  # 4 examples, batch 8: the one step the final model was saved at
    assert fingerprint["launches"] == [{"world_size": 1}]  # how it ran, not what it is: never compared
    with pytest.raises(EvaluationError, match="holds predictions of another evaluation .different generation"):
        _evaluate(run_dir, "max_new_tokens.apa=7")
    assert predictions.read_bytes() == before
    again = _evaluate(run_dir)["final_model"]  # the same evaluation again: resumes (nothing to do), same numbers
    assert again["n_apa"] == first["n_apa"] and predictions.read_bytes() == before
    launches = json.loads((run_dir / "eval" / "final_model" / "fingerprint.json").read_text())["launches"]
    assert launches == [{"world_size": 1}, {"world_size": 1}]


def test_other_data_goes_to_its_own_folder_and_the_override_is_applied(run_dir):
    own = json.loads((run_dir / "eval" / "final_model" / "metrics.json").read_text()) if (
        run_dir / "eval" / "final_model" / "metrics.json").exists() else _evaluate(run_dir)["final_model"]
    other = _evaluate(run_dir, "data.limit=1")["final_model"]
    assert other["n_utterances_scored"] == 1 and own["n_utterances_scored"] == 2  # data.limit reached the reader
    folders = sorted(p.name for p in run_dir.iterdir() if p.name.startswith("eval"))
    assert folders[0] == "eval" and len(folders) == 2 and folders[1].startswith("eval-sample-")
    assert json.loads((run_dir / "eval" / "final_model" / "metrics.json").read_text())["n_utterances_scored"] == 2


def _copy(run, to):
    """The module's run without its evaluations, for a test whose evaluation adds folders to it."""
    shutil.copytree(run, to, ignore=shutil.ignore_patterns("eval", "eval-*"))
    return to


def test_an_evaluation_on_other_data_keeps_its_log_beside_its_results(run_dir, tmp_path):
    """evaluate.py on other data: the results go to <run>/eval-<data>-<digest>/, and its log with them (it went to
    <run>/eval/evaluate.log, making an eval/ that held only the other data's log)."""
    run = _copy(run_dir, tmp_path / "run")
    done = subprocess.run([sys.executable, "evaluate.py", f"run_dir={run}", "data.limit=1", *FAST_EVAL], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (other,) = run.glob("eval-sample-*")
    assert not (run / "eval").exists()
    log = (other / "evaluate.log").read_text()
    assert "on other data or prompts than its own" in log and f"{other / 'final_model'}: pcc_accuracy=" in log


def test_scoring_a_run_on_utterances_it_trained_on_is_warned_of_and_recorded(run_dir, tmp_path, caplog):
    """data.test_split=train on a run trained on that split: not refused (experiment=overfit does it on purpose), but
    warned of, naming how many of the test utterances the run trained on (the first 2 of these 3, by id as
    training's own split check compares), and recorded beside the metrics for a report to flag. Its own test split
    shares none: 0, and no warning."""
    run = _copy(run_dir, tmp_path / "run")
    caplog.set_level("WARNING")
    metrics = _evaluate(run, "data.test_split=train", "data.limit=3")["final_model"]
    (folder,) = run.glob("eval-sample-*")
    assert json.loads((folder / "final_model" / "test_split.json").read_text())["utterances_trained_on"] == 2
    assert metrics["n_utterances_trained_on"] == 2 and metrics["n_utterances_scored"] == 3
    assert json.loads((folder / "final_model" / "metrics.json").read_text())["n_utterances_trained_on"] == 2
    assert "2 of the 3 test utterances (data.test_split=train) are ones" in caplog.text
    assert "trained on (000010011, 000010035)" in caplog.text
    caplog.clear()
    assert _evaluate(run)["final_model"]["n_utterances_trained_on"] == 0 and "trained on" not in caplog.text


def test_where_the_runs_training_data_cannot_be_read_again_the_check_is_skipped_with_a_warning(run_dir, tmp_path,
                                                                                                caplog):
    """The run's training corpus gone (and the test data no copy of it): which test utterances it trained on is
    unknown. The evaluation goes on, says so, and records no count (rather than a 0 that was never checked)."""
    from omegaconf import OmegaConf

    from apa.data import SAMPLE_ROOT
    from apa.evaluation.examples import trained_on

    run = _copy(run_dir, tmp_path / "run")
    record = json.loads((run / "training_config.json").read_text())
    record["config"]["data"]["path"] = str(tmp_path / "gone")
    record["data"]["dataset"]["content"] = "0" * 16  # another corpus than the test data's
    (run / "training_config.json").write_text(json.dumps(record))
    caplog.set_level("WARNING")
    assert trained_on(run, OmegaConf.create(record["config"]["data"] | {"path": str(SAMPLE_ROOT)}),
                      {"speakers": {"000010011": "0001"}, "split": "train"}) == {}
    assert f"could not check which test utterances {run} trained on" in caplog.text
    assert f"data.path={tmp_path / 'gone'} is not a folder" in caplog.text


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_an_evaluation_keeps_the_batch_says_how_to_continue_and_unlocks(run_dir, tmp_path, request,
                                                                                          monkeypatch, capsys, sig):
    """SIGTERM (or Ctrl-C) while the first batch is generated: that batch is finished and written, then one line says
    how many answers are kept and the command that continues; exit 128 + the signal; the folder's lock is released
    and the handlers are put back (it died with 'Terminated' and left its .lock). That command then finishes it."""
    import apa.sft.generation as generation
    from apa.errors import one_line_errors

    run = _copy(run_dir, tmp_path / "run")
    generate, calls = generation.generate_answers, []

    def signalled(*args, **kwargs):
        calls.append(len(calls))
        if len(calls) == 1:
            os.kill(os.getpid(), sig)
        return generate(*args, **kwargs)

    monkeypatch.setattr(generation, "generate_answers", signalled)
    outer = signal.signal(signal.SIGTERM, signal.default_int_handler)  # one the evaluation missed ends it, not pytest
    request.addfinalizer(lambda: signal.signal(signal.SIGTERM, outer))
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with pytest.raises(SystemExit) as stopped:
        one_line_errors(_evaluate)(run)
    assert stopped.value.code == 128 + sig and len(calls) == 1
    said = capsys.readouterr().err.strip().splitlines()[-1]
    predictions = run / "eval" / "final_model" / "predictions.jsonl"
    assert len(predictions.read_text().splitlines()) == 2  # the batch in progress: both APA answers
    assert said.startswith(f"error: stopped by {sig.name}: 2 answers kept in {run / 'eval'} (final_model: 2). The "
                           "same command continues it, generating only what is missing: `"), said
    command = said[said.index("`") + 1:said.rindex("`")]
    assert shlex.split(command) == ["python", "evaluate.py", f"run_dir={run}", "checkpoint=final_model", *FAST_EVAL]
    assert not (run / "eval" / ".lock").exists()
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    assert _evaluate(run)["final_model"]["n_utterances_scored"] == 2 and len(calls) == 2  # only the MDD batch
    assert len(predictions.read_text().splitlines()) == 4


def test_a_different_base_model_is_refused(run_dir):
    with pytest.raises(EvaluationError, match="model.path: a run is evaluated with the base model it was trained on"):
        _evaluate(run_dir, "model.path=/elsewhere")


def test_predictions_without_a_fingerprint_are_not_trusted(run_dir, tmp_path):
    _evaluate(run_dir)
    (run_dir / "eval" / "final_model" / "fingerprint.json").unlink()
    with pytest.raises(EvaluationError, match="has no readable fingerprint.json beside it"):
        _evaluate(run_dir)
    (run_dir / "eval" / "final_model" / "predictions.jsonl").unlink()
    _evaluate(run_dir)  # a fresh start writes both again
    assert (run_dir / "eval" / "final_model" / "fingerprint.json").exists()


def test_one_evaluation_per_folder_and_none_while_training(run_dir):
    with RunLock(run_dir / "eval", "evaluation"), pytest.raises(UserError, match="eval is in use by evaluation"):
        _evaluate(run_dir)
    with RunLock(run_dir, "training"), pytest.raises(EvaluationError, match="still being trained by training"):
        _evaluate(run_dir)


def test_a_predictions_file_with_a_repeated_or_malformed_line_is_an_error(tmp_path):
    record = {"id": "u1", "task": "apa", "reference": {"accuracy": 8, "fluency": 8, "prosodic": 8, "total": 8},
              "prediction": None, "raw": ""}
    path = tmp_path / "predictions.jsonl"
    path.write_text(json.dumps(record) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(EvaluationError, match=r"predictions.jsonl:2: apa answer for u1 repeats line 1"):
        score_file(path)
    path.write_text(json.dumps(record) + "\n{not json\n")
    with pytest.raises(EvaluationError, match=r"predictions.jsonl:2: not a prediction record"):
        score_file(path)
    path.write_text(json.dumps({"id": "u1"}) + "\n")
    with pytest.raises(EvaluationError, match=r"predictions.jsonl:1: not a prediction record"):
        score_file(path)


def test_a_garbage_line_mid_file_stops_the_resume_and_a_torn_last_line_is_cut_with_a_warning(tmp_path, caplog):
    from apa.evaluation.predictions import EvaluationError, _done_keys

    def record(i):
        return json.dumps({"id": str(i), "task": "apa", "reference": {}, "prediction": None, "raw": ""}) + "\n"

    path = tmp_path / "predictions.jsonl"
    path.write_text(record(1) + "garbage\n" + record(2))
    with pytest.raises(EvaluationError, match=r"predictions.jsonl:2: not a prediction record, and not the last line"):
        _done_keys(path)
    assert path.read_text() == record(1) + "garbage\n" + record(2)  # nothing cut: the user decides
    caplog.set_level("WARNING")
    path.write_text(record(1) + record(2) + '{"id": "3", "ta')
    assert _done_keys(path) == {("1", "apa"), ("2", "apa")}
    assert path.read_text() == record(1) + record(2) and "cutting off a torn last line" in caplog.text
