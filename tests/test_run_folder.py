"""Run folders are transactions: a refused command changes nothing, one training or evaluation holds a folder at a
time, a resume reproduces the run (or says how it differs), a damaged checkpoint is found before it is trusted."""

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from apa.errors import UserError
from apa.run_folder import (
    MANIFEST,
    RunFolderError,
    RunLock,
    check_run_dir,
    config_differences,
    newest_intact_checkpoint,
    write_manifest,
)
from apa.training.recipe import train
from tests.conftest import REPO, BackgroundRun, compose_config

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out

DEMO = ("experiment=demo", "prompts=terse", "data.limit=2", "trainer.num_train_epochs=1", "trainer.report_to=[]")
EXTENDED = (*(a for a in DEMO if not a.startswith("trainer.num_train_epochs=")), "trainer.num_train_epochs=2")


def _files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _train_py(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A demo run trained through train.py, as a user starts one (1 epoch, 2 utterances)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    done = _train_py(*DEMO, f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr[-3000:]
    return run


def test_the_run_record_is_written_by_the_start_that_went_ahead(finished_run):
    assert sorted(p.name for p in (finished_run / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml",
                                                                            "overrides.yaml"]
    assert "experiment=demo" in (finished_run / ".hydra" / "overrides.yaml").read_text()
    assert not (finished_run / ".lock").exists()  # released at the end
    manifest = json.loads((finished_run / "checkpoint-epoch-1" / MANIFEST).read_text())
    assert "adapter_model.safetensors" in manifest and "trainer_state.json" in manifest


def test_a_refused_rerun_leaves_the_run_byte_identical(finished_run):
    before = _files(finished_run)
    refused = _train_py("experiment=demo", "prompts=concise", f"hydra.run.dir={finished_run}")
    assert refused.returncode == 2
    assert refused.stderr.strip().startswith("error: ") and len(refused.stderr.strip().splitlines()) == 1
    assert "already holds a run" in refused.stderr and "resume=true" in refused.stderr
    assert _files(finished_run) == before


def test_training_into_a_folder_that_is_not_a_run_is_refused_and_leaves_it_as_it_was(tmp_path):
    """hydra.run.dir=. from the project root once replaced the project's README.md: a non-empty folder without a run
    record is someone else's, and nothing is written into it."""
    folder = tmp_path / "project"
    (folder / "corpus").mkdir(parents=True)
    (folder / "README.md").write_text("# my project\n")
    (folder / "corpus" / "a.wav").write_bytes(b"RIFF")
    before = sorted(p.name for p in folder.iterdir()), _files(folder)
    refused = _train_py(*DEMO, f"hydra.run.dir={folder}")
    assert refused.returncode == 2 and refused.stderr.strip().startswith("error: ")
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr[-2000:]
    assert "is not empty and holds no run of this project (README.md, corpus)" in refused.stderr
    assert (sorted(p.name for p in folder.iterdir()), _files(folder)) == before
    # what a failed start of ours leaves (its .hydra record, its log) is not someone else's
    empty = tmp_path / "restart"
    (empty / ".hydra").mkdir(parents=True)
    (empty / "train.log").write_text("[...] an earlier start\n")
    assert check_run_dir(empty, resume=False) is None


def test_a_refused_extend_leaves_the_finished_run_byte_identical(finished_run, tmp_path):
    """extend=true on a finished run whose epoch checkpoints are gone used to log 'starting from scratch', delete
    eval/final_model and train a new model over the finished one: it is refused before anything changes."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    for checkpoint in run.glob("checkpoint-epoch-*"):
        shutil.rmtree(checkpoint)
    (run / "eval" / "final_model").mkdir(parents=True)
    (run / "eval" / "final_model" / "metrics.json").write_text("{}")
    before = _files(run)
    refused = _train_py(*EXTENDED, "resume=true", "extend=true", f"hydra.run.dir={run}")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr[-2000:]
    assert "extend=true continues a finished run from its last intact epoch checkpoint" in refused.stderr
    assert "Nothing was changed" in refused.stderr
    assert _files(run) == before


def test_a_start_that_fails_before_any_run_began_leaves_no_folder(corpus, tmp_path):
    """Bad data found after the start wrote its .hydra record (and its log): the failed start is undone, so no
    half-made run folder is left to be mistaken for a run; a folder that existed keeps what it held."""
    from tests.conftest import edit_scores

    edit_scores(corpus, lambda scores: scores.clear())  # no utterance has labels: nothing to train on
    run = tmp_path / "run"
    failed = _train_py(*DEMO, f"data.path={corpus}", f"hydra.run.dir={run}")
    assert failed.returncode == 2, failed.stderr[-2000:]
    assert failed.stderr.strip().splitlines()[-1].startswith("error: train split: skipped 20 of 20 utterances")
    assert not run.exists()
    kept = tmp_path / "kept"
    (kept / "eval").mkdir(parents=True)  # not a run folder's start: refused before anything is written
    assert _train_py(*DEMO, f"data.path={corpus}", f"hydra.run.dir={kept}").returncode == 2
    assert sorted(p.name for p in kept.iterdir()) == ["eval"]


@pytest.mark.parametrize(("sig", "resume"), [(signal.SIGTERM, False), (signal.SIGINT, True)],
                         ids=["SIGTERM-new-run", "SIGINT-resume"])
def test_a_signal_while_starting_says_nothing_was_trained_and_undoes_the_start(finished_run, tmp_path, sig, resume):
    """SIGTERM or Ctrl-C after the run folder exists, before the first optimizer step (the lock is taken; the model,
    data and trainer are still being built): one line saying nothing was trained and how to go on, exit 128 + the
    signal (it died silently with 143 and left .hydra/, .lock and train.log). A new run's start is undone as a
    failed start is; a resumed run keeps what it had."""
    run = tmp_path / "run"
    if resume:
        shutil.copytree(finished_run, run)
        shutil.rmtree(run / "final_model")
        before = {k: v for k, v in _files(run).items() if k != "train.log"}  # the log gets this start's lines
    args = ("resume=true",) if resume else DEMO
    start = BackgroundRun([sys.executable, "train.py", *args, f"hydra.run.dir={run}"], REPO, tmp_path / "start")
    start.kill_once(run / ".lock", delay=0.5, sig=sig)  # the start takes seconds more (imports, model, data)
    start.wait(expected_code=128 + sig)
    assert start.killed.is_set()
    said = start.log_path.read_text().strip().splitlines()[-1]
    assert said.startswith(f"error: stopped by {sig.name} while starting, before the first training step: "
                           "nothing was trained"), said
    if resume:
        assert said.endswith("its checkpoints are intact (newest: checkpoint-epoch-1). Continue with the same "
                             f"overrides plus `resume=true hydra.run.dir={run}`")
        assert {k: v for k, v in _files(run).items() if k != "train.log"} == before and not (run / ".lock").exists()
    else:
        assert said.endswith("what the start wrote is removed. Start again with the same command")
        assert not run.exists()


def test_resume_when_every_checkpoint_is_damaged_is_refused_and_changes_nothing(finished_run, tmp_path):
    """An interrupted run whose only epoch checkpoint lost its manifest (or a file) used to start over from scratch,
    writing over it, and record a resume: nothing can be resumed, so nothing is done and the damage is named."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    shutil.rmtree(run / "final_model")
    (run / "checkpoint-epoch-1" / MANIFEST).unlink()
    before = _files(run)
    refused = _train_py("resume=true", f"hydra.run.dir={run}")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr[-2000:]
    assert f"no checkpoint in {run} is intact (checkpoint-epoch-1: {MANIFEST} is missing)" in refused.stderr
    assert "rm -r" in refused.stderr
    assert _files(run) == before


def test_resume_with_a_conflicting_override_is_refused_with_the_differences(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    shutil.rmtree(run / "final_model")
    before = _files(run)
    refused = _train_py("resume=true", "lora=fresh_r64", "trainer.learning_rate=0.5", f"hydra.run.dir={run}")
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "lora.r: 320 -> 64" in refused.stderr and "trainer.learning_rate: 0.001 -> 0.5" in refused.stderr
    assert _files(run) == before


def test_resume_on_a_folder_without_a_run_is_an_error(tmp_path):
    refused = _train_py("experiment=demo", "resume=true", f"hydra.run.dir={tmp_path / 'typo'}")
    assert refused.returncode == 2 and "holds no run" in refused.stderr
    assert not (tmp_path / "typo").exists()  # no empty folder left behind


def test_a_second_training_into_a_held_folder_names_the_holder(tmp_path):
    run = tmp_path / "run"
    with RunLock(run, "training"):
        refused = _train_py(*DEMO, f"hydra.run.dir={run}")
    assert refused.returncode == 2
    assert f"is in use by training (PID {os.getpid()}" in refused.stderr
    assert sorted(p.name for p in run.iterdir()) == []  # the holder's .lock is gone, nothing else was written


def _watch(caplog):
    """Warnings of apa.run_folder, whatever logging configuration an earlier test left behind."""
    logger = logging.getLogger("apa.run_folder")
    logger.disabled = False
    caplog.set_level(logging.WARNING, logger="apa.run_folder")


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path, caplog):
    _watch(caplog)
    (tmp_path / ".lock").write_text(json.dumps({"purpose": "training", "pid": 999999, "host": "gone"}))
    with RunLock(tmp_path, "evaluation"):
        held = json.loads((tmp_path / ".lock").read_text())
        assert held["pid"] == os.getpid() and held["purpose"] == "evaluation"
        with pytest.raises(RunFolderError, match="in use by evaluation"):
            RunLock(tmp_path, "training").acquire()
    assert "taking over the lock" in caplog.text and "999999" in caplog.text


def _checkpoint(run: Path, name: str, step: int) -> Path:
    folder = run / name
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (folder / "adapter_model.safetensors").write_bytes(bytes(range(256)) * step)
    write_manifest(folder)
    return folder


def test_a_damaged_newest_checkpoint_is_named_and_skipped(tmp_path, caplog):
    _watch(caplog)
    first = _checkpoint(tmp_path, "checkpoint-epoch-1", 4)
    second = _checkpoint(tmp_path, "checkpoint-epoch-2", 8)
    assert newest_intact_checkpoint(tmp_path) == second
    weights = second / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")  # same size, one byte flipped
    assert newest_intact_checkpoint(tmp_path) == first
    assert "checkpoint-epoch-2 is damaged" in caplog.text and "SHA-256" in caplog.text
    weights.write_bytes(b"truncated")
    (first / "trainer_state.json").unlink()  # not even a checkpoint any more
    assert newest_intact_checkpoint(tmp_path) is None


def test_config_differences_list_every_changed_value():
    saved = {"lora": {"r": 320, "name": "x"}, "resume": False, "trainer": {"report_to": ["tensorboard"]}}
    asked = {"lora": {"r": 64, "name": "x"}, "resume": True, "trainer": {"report_to": []}, "new_option": 1}
    # a key only one side has is a difference too (run folders of another format are refused before this)
    assert config_differences(saved, asked) == ["lora.r: 320 -> 64", "new_option: '(unset)' -> 1",
                                                "trainer.report_to: ['tensorboard'] -> []"]


def test_extend_trains_a_finished_run_for_more_epochs(tmp_path):
    run = tmp_path / "run"
    train(compose_config(*DEMO), run)
    with pytest.raises(RunFolderError, match="extend=true trainer.num_train_epochs"):
        check_run_dir(run, resume=True, requested=None)
    with pytest.raises(RunFolderError, match="differs from the run.*num_train_epochs: 1.0 -> 2.0.*extend=true"):
        train(compose_config(*EXTENDED, "resume=true"), run)
    (run / "eval" / "final_model").mkdir(parents=True)
    (run / "eval" / "final_model" / "metrics.json").write_text("{}")  # an evaluation of the 1-epoch final model
    final = train(compose_config(*EXTENDED, "resume=true", "extend=true"), run)
    assert not (run / "eval" / "final_model").exists()  # it described the old final model
    assert (run / "checkpoint-epoch-2").is_dir() and final.is_dir()
    record = json.loads((run / "training_config.json").read_text())
    assert record["config"]["trainer"]["num_train_epochs"] == 2
    assert [r["from"] for r in record["resumes"]] == ["checkpoint-epoch-1"]


@pytest.mark.parametrize(("override", "message"), [
    ("data.limit=-1", "data.limit=-1 must be at least 1"),
    ("trainer.num_train_epochs=0", "trainer.num_train_epochs=0.0 must be a positive number of epochs"),
    ("trainer.per_device_train_batch_size=-1", "per_device_train_batch_size=-1 must be at least 1"),
    ("lora.dropout=1.5", "lora.dropout=1.5 must be in [0, 1)"),
    ("trainer.learning_rate=-0.1", "learning_rate=-0.1 must be positive"),
    ("trainer.learning_rate=inf", "trainer.learning_rate=inf must be a finite number"),  # trained to NaN weights
    ("trainer.max_grad_norm=-1", "trainer.max_grad_norm=-1.0 must be 0 or more (0: no gradient clipping)"),
    ("trainer.logging_steps=0", "trainer.logging_steps=0.0 must be positive"),  # was a traceback after loading
    ("seed=-1", "seed=-1 must be from 0 to 4294967295"),  # torch's own range: was a traceback after loading
])
def test_values_are_checked_before_any_model_loads(tmp_path, override, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        train(compose_config(*DEMO, override), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("override", "message"), [
    ("~lora", "error: lora not set: give a value"),  # was an AttributeError traceback from the range checks
    ("lora.r=${oops}", "error: the config cannot be resolved: Interpolation key 'oops' not found"),
])
def test_an_override_that_leaves_the_config_unresolvable_is_one_line(tmp_path, override, message):
    done = _train_py(*DEMO, override, f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 2 and done.stderr.strip().startswith(message), done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_a_wrongly_typed_trainer_value_fails_at_compose_time():
    from hydra.errors import ConfigCompositionException
    from omegaconf.errors import ValidationError

    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_config("trainer.learning_rate=abc")
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_config("trainer.per_device_train_batch_size=2.5")


def test_known_errors_are_one_line_and_the_traceback_is_there_on_request(tmp_path):
    demo = [a for a in DEMO if not a.startswith("data.limit=")]  # one data.limit (a second one is warned of)
    plain = _train_py(*demo, "data.limit=-1", f"hydra.run.dir={tmp_path / 'a'}")
    assert plain.returncode == 2 and plain.stderr.strip() == "error: data.limit=-1 must be at least 1, or null for " \
                                                               "the whole split"
    full = _train_py(*demo, "data.limit=-1", f"hydra.run.dir={tmp_path / 'b'}", env={"HYDRA_FULL_ERROR": "1"})
    assert full.returncode != 0 and "Traceback" in full.stderr and "ConfigError" in full.stderr


def test_no_hub_fails_at_once_naming_the_three_ways_forward(tmp_path):
    """No network here, and an empty hub cache: the default config needs the hub for model and data."""
    done = _train_py(f"hydra.run.dir={tmp_path / 'run'}", env={"HF_HOME": str(tmp_path / "hf")})
    assert done.returncode == 2, done.stderr[-2000:]
    line = done.stderr.strip()
    assert line.startswith("error: model.path=microsoft/Phi-4-multimodal-instruct is not in the local hub cache")
    assert ("model.path=<dir> after `hf download microsoft/Phi-4-multimodal-instruct --revision refs/pr/70 --local-dir "
            "<dir>`") in line and "HF_HUB_OFFLINE=1" in line and "experiment=demo" in line
    offline = _train_py(f"hydra.run.dir={tmp_path / 'run'}", env={"HF_HOME": str(tmp_path / "hf"),
                                                                   "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 2 and "(HF_HUB_OFFLINE=1)" in offline.stderr


def test_compare_right_after_training_marks_the_run_not_evaluated(finished_run, tmp_path):
    from apa.reporting.compare import main

    main([str(finished_run), "--out", str(tmp_path)])
    table = (tmp_path / "comparison.md").read_text()
    assert "(not evaluated)" in table and "have no metrics yet" in table
    assert "random weights" in table and "experiment=overfit" in table  # why a demo's scores are n/a
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left


def test_a_full_disk_is_one_line_that_says_the_checkpoints_are_intact(capsys, monkeypatch):
    import errno

    from apa.errors import one_line_errors

    @one_line_errors
    def saving():
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/checkpoint-3/optimizer.pt")

    with pytest.raises(SystemExit) as stopped:
        saving()
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: no space left on the device (/runs/x/checkpoint-3/optimizer.pt)")
    assert "complete checkpoint" in err and "resume=true" in err
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(OSError):
        saving()
    monkeypatch.delenv("HYDRA_FULL_ERROR")
    # torch reports a full disk as its own RuntimeError (no errno), or raises one from the OSError
    for torch_error in (RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0"),
                        RuntimeError("[enforce fail at inline_container.cc:858] . PytorchStreamWriter failed writing "
                                     "file data/0: file write failed")):
        @one_line_errors
        def torch_save(error=torch_error):
            raise error

        with pytest.raises(SystemExit):
            torch_save()
        assert capsys.readouterr().err.startswith("error: no space left on the device (a write failed part-way)")

    @one_line_errors
    def chained():
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/adapter.safetensors")
        except OSError as e:
            raise RuntimeError("saving the checkpoint failed") from e

    with pytest.raises(SystemExit):
        chained()
    assert capsys.readouterr().err.startswith("error: no space left on the device (/runs/x/adapter.safetensors)")

    @one_line_errors
    def a_bug():
        raise RuntimeError("unrelated")

    with pytest.raises(RuntimeError, match="unrelated"):  # anything else keeps its traceback
        a_bug()


def test_printed_commands_survive_the_shell_and_hydras_grammar():
    import shlex

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from apa.errors import override_arg

    parser = OverridesParser.create()
    for path in ("/runs/plain_1", "/my runs/a=1", "/it's, odd", "/both'\"q", "/end\\", "/$HOME b"):
        (token,) = shlex.split(override_arg("hydra.run.dir", path))
        assert parser.parse_override(token).value() == path, path
    assert override_arg("run_dir", "/runs/plain_1") == "run_dir=/runs/plain_1"  # plain paths stay readable


def test_resume_with_the_overrides_forgotten_reuses_the_runs_own(finished_run, tmp_path):
    """After an interruption the user types only `resume=true hydra.run.dir=<run>`: the run's saved overrides
    (experiment=demo, prompts=terse, data.limit=2, ...) are used, not train.yaml's defaults (the full-size model)."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    shutil.rmtree(run / "final_model")
    done = _train_py("resume=true", f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((run / "training_config.json").read_text())
    assert record["config"]["model"]["name"] == "tiny" and record["config"]["prompts"]["name"] == "terse"
    assert [r["from"] for r in record["resumes"]] == ["checkpoint-epoch-1"] and (run / "final_model").is_dir()
    assert (run / ".hydra" / "overrides.yaml").read_text() == (finished_run / ".hydra" / "overrides.yaml").read_text()


def test_compare_marks_rows_scored_on_different_test_sets(tmp_path):
    from apa.reporting.compare import write_tables

    common = {"lora": "x", "trainable_params": 1, "train_seconds": 1.0, "final_train_loss": 1.0, "epoch": "1",
              "checkpoint": "checkpoint-epoch-1"}
    rows = [{**common, "run": "a", "test_set": "1111"}, {**common, "run": "b", "test_set": "2222"},
            {**common, "run": "c", "test_set": "1111"}]
    table = write_tables(rows, tmp_path)
    assert "scored on 2 different test sets" in table and "| test set |" in table
    letters = [line.rsplit("|", 2)[-2].strip() for line in table.splitlines() if line.startswith(("| a ", "| b ",
                                                                                                   "| c "))]
    assert letters == ["A", "B", "A"]
    assert "different test sets" not in write_tables([rows[0], rows[2]], tmp_path)


def test_resume_drops_the_saved_overrides_the_command_repeats(tmp_path):
    """`resume=true` with the run's `+` overrides typed again (as the stop message suggests) must not compose them
    twice; a repeated key takes the command's value (and the folder check then lists it as a difference)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from tests.conftest import CONF

    sys.path.insert(0, str(REPO))
    import train as train_py

    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create(["experiment=demo", "+trainer/deepspeed=zero2", "data.limit=2"]),
                   tmp_path / ".hydra" / "overrides.yaml")
    given = ["resume=true", "+trainer/deepspeed=zero2", "data.limit=3"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = train_py.resume_config(compose(config_name="train", overrides=given), tmp_path, given)
    assert (cfg.model.name, cfg.data.limit, cfg.trainer.deepspeed.zero_optimization.stage) == ("tiny", 3, 2)


def test_a_run_folder_of_another_format_is_refused_in_one_line_naming_its_version(finished_run, tmp_path):
    from apa.run_folder import FORMAT_VERSION, read_record

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    record = json.loads((run / "training_config.json").read_text())
    assert record["format_version"] == FORMAT_VERSION
    del record["format_version"]  # as every version before the format was numbered wrote it
    (run / "training_config.json").write_text(json.dumps(record))
    expected = f"is a run folder of format 1, written by apa .*reads format {FORMAT_VERSION}"
    with pytest.raises(RunFolderError, match=expected):
        read_record(run)
    done = subprocess.run([sys.executable, "evaluate.py", f"run_dir={run}"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1
    assert "format 1" in done.stderr


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])


def _apa(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "apa", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


def _evaluate_py(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "evaluate.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


# (what is damaged, how, the command that reads it back, what its one line must name)
DAMAGED = {
    "record-evaluate": ("training_config.json", _truncate, lambda r: _evaluate_py(f"run_dir={r}"),
                        "training_config.json cannot be read"),
    "record-compare": ("training_config.json", _truncate, lambda r: _apa("compare", str(r)),
                       "training_config.json cannot be read"),
    "record-resume": ("training_config.json", _truncate, lambda r: _train_py("resume=true", f"hydra.run.dir={r}"),
                      "training_config.json cannot be read"),
    "overrides-resume": (".hydra/overrides.yaml", lambda p: p.write_text("- [unclosed\n  : :"),
                         lambda r: _train_py("resume=true", f"hydra.run.dir={r}"), "overrides.yaml cannot be read"),
    "metrics-compare": ("eval/final_model/metrics.json", _truncate, lambda r: _apa("compare", str(r)),
                        "metrics.json cannot be read"),
    "trainer-state-extend": ("checkpoint-epoch-1/trainer_state.json", _truncate,
                             lambda r: _train_py(*EXTENDED, "resume=true", "extend=true",
                                                 f"hydra.run.dir={r}"),
                             "has none (deleted, or damaged"),
    "epoch-weights-evaluate": ("checkpoint-epoch-1/adapter_model.safetensors", _truncate,
                               lambda r: _evaluate_py(f"run_dir={r}", "checkpoint=all"),
                               "checkpoint-epoch-1 is damaged (adapter_model.safetensors has"),
    "final-adapter-evaluate": ("final_model/adapter_model.safetensors", lambda p: p.unlink(),
                               lambda r: _evaluate_py(f"run_dir={r}"),
                               "final_model is damaged (adapter_model.safetensors is missing"),
    "final-weights-evaluate": ("final_model/adapter_model.safetensors", _truncate,
                               lambda r: _evaluate_py(f"run_dir={r}"), "adapter_model.safetensors cannot be read"),
    "lock-folder-train": ("new/.lock", lambda p: p.mkdir(parents=True), lambda r: _train_py(*DEMO,
                          f"hydra.run.dir={r / 'new'}"), "a folder is in the place of the lock file"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_a_damaged_file_of_ours_is_one_line_naming_it(finished_run, tmp_path, case):
    """Every file the project reads back goes through one reader: a truncated, garbled or misplaced one is one line
    naming it and what to do, never a traceback, and nothing in the folder changes."""
    name, damage, command, message = DAMAGED[case]
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    if name.startswith("eval/"):
        (run / name).parent.mkdir(parents=True)
        (run / name).write_text(json.dumps({"pcc_total": 0.5}))
    damage(run / name)
    before = _files(run)
    log_before = (run / "train.log").read_text()
    done = command(run)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and lines and lines[-1].startswith("error: "), done.stderr[-3000:]
    assert "Traceback" not in done.stderr and message in lines[-1], lines[-1]
    after = _files(run)
    assert (run / "train.log").read_text().startswith(log_before)  # at most a log line added, of why
    assert {k: v for k, v in after.items() if k != "train.log"} == {k: v for k, v in before.items() if k != "train.log"}


def test_a_run_folder_that_is_a_file_is_one_line(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    done = _train_py(*DEMO, f"hydra.run.dir={target}")
    assert done.returncode == 2 and "is a file, not a folder" in done.stderr and "Traceback" not in done.stderr
    assert target.read_text() == "mine\n"


def test_checkpoints_without_a_record_get_the_same_answer_with_and_without_resume(finished_run, tmp_path):
    """It used to say 'use resume=true' without it and 'drop resume=true' with it."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "training_config.json").unlink()
    for resume in (False, True):
        with pytest.raises(RunFolderError, match="holds checkpoints .* but no training_config.json .* neither be "
                                                 "resumed nor trained into"):
            check_run_dir(run, resume=resume)
