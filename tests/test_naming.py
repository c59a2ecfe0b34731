"""Run folder names (apa.run_folder.naming, conf/hydra/default.yaml): `run_name=`, the overrides typed, capped."""

import json
import os
import re
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from apa.run_folder.naming import MAX_OVERRIDES, safe_overrides
from tests.conftest import CONF, REPO

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out

STAMP = r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d"
TRAIN = (sys.executable, str(REPO / "train.py"), "experiment=demo", "lora=fresh_r64", "prompts=terse", "data.limit=2",
         "trainer.num_train_epochs=1", "trainer.report_to=[]")


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """(run folder, sweep folder) of a command line, as Hydra resolves them for it (in a scratch folder: resolving a
    default run folder makes it)."""
    monkeypatch.chdir(tmp_path)

    def resolve(*overrides: str) -> tuple[str, str]:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)  # the `hydra:` resolver reads it, as in a job
        return cfg.hydra.run.dir, cfg.hydra.sweep.dir

    yield resolve
    HydraConfig.instance().cfg = None


def test_run_name_is_the_run_folder_and_the_sweep_folder(folders):
    assert folders("run_name=baseline", "experiment=demo") == ("outputs/runs/baseline", "outputs/multirun/baseline")


def test_an_unnamed_run_folder_shows_its_lora_choice_and_the_overrides_typed(folders):
    run, sweep = folders()
    assert re.fullmatch(rf"outputs/runs/{STAMP}_pretrained_r320", run)  # the LoRA choice shows, typed or not
    assert re.fullmatch(rf"outputs/multirun/{STAMP}", sweep)
    run, _ = folders("experiment=demo", "lora=fresh_r64", "trainer.num_train_epochs=3", "data.path='/my data/so762'")
    # experiment and lora are left out of the overrides part (exclude_keys); a path's / and spaces become _
    assert re.fullmatch(rf"outputs/runs/{STAMP}_fresh_r64_data.path=_my_data_so762,trainer.num_train_epochs=3", run)
    run, _ = folders("experiment=overfit", "seed=3")  # an experiment with its own folder label keeps the scheme
    assert re.fullmatch(rf"outputs/runs/{STAMP}_overfit_seed=3", run)


def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path):
    """Two trainings started at once with the same command line (a script's loop): each gets its own default folder
    (the second one was refused at the first one's lock, telling it to wait). The folder is taken by making it, so
    the processes cannot both take one; one process asking again gets its own folder back."""
    take = ("from apa.run_folder.naming import new_run_dir as d; "
            "a = d('outputs/runs', None, '2026-12-04_15-54-43', 'fresh_r64', 'seed=3'); "
            "assert d('outputs/runs', None, '2026-12-04_15-54-43', 'fresh_r64', 'seed=3') == a; print(a)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("APA_RUN_STAMP", None)
    procs = [subprocess.Popen([sys.executable, "-c", take], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    taken = sorted(p.communicate()[0].strip() for p in procs)
    name = "outputs/runs/2026-12-04_15-54-43_fresh_r64_seed=3"
    assert taken == [name, f"{name}-2", f"{name}-3"]
    assert sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "outputs/runs").iterdir()) == taken
    # a named run's folder is its name, taken or not (resume=true finds it again), and nothing is made for it
    from apa.run_folder.naming import new_run_dir
    assert new_run_dir(str(tmp_path), "baseline", "2026-12-04_15-54-43", "fresh_r64", "") == f"{tmp_path}/baseline"
    assert not (tmp_path / "baseline").exists()


def test_long_overrides_are_capped_and_two_long_ones_stay_apart(folders):
    many = [f"trainer.{k}={v}" for k, v in (("learning_rate", 3e-5), ("warmup_steps", 7), ("weight_decay", 0.01),
                                            ("per_device_train_batch_size", 2), ("gradient_accumulation_steps", 4))]
    run, _ = folders("experiment=demo", *many)
    part = run.split("_pretrained_r320_", 1)[1]
    assert len(part) == MAX_OVERRIDES and re.search(r"_[0-9a-f]{8}$", part), part
    other, _ = folders("experiment=demo", *many[:-1], "trainer.gradient_accumulation_steps=8")
    assert other.split("_pretrained_r320_", 1)[1] != part  # cut at the same place, told apart by the digest
    assert safe_overrides("a=1,b='x y'/z,c=[u,v]") == "a=1,b=x_y_z,c=u,v"


def test_a_run_name_that_is_not_a_plain_folder_name_is_refused_in_one_line(tmp_path):
    done = subprocess.run([*TRAIN, "run_name=../elsewhere"], cwd=tmp_path, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 2 and done.stderr.startswith("error: run_name=../elsewhere is not a plain folder "
                                                           "name"), done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1 and not any(tmp_path.iterdir())  # no folder made


def test_a_named_run_trains_into_its_folder_records_its_name_and_is_not_trained_over(tmp_path):
    env = {**os.environ, "HYDRA_FULL_ERROR": ""}
    done = subprocess.run([*TRAIN, "run_name=first-try"], cwd=tmp_path, capture_output=True, text=True, env=env,
                          check=False)
    run = tmp_path / "outputs" / "runs" / "first-try"
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Trained: {run / 'final_model'}" in done.stdout
    record = json.loads((run / "training_config.json").read_text())
    assert record["run_name"] == "first-try" and record["config"]["run_name"] == "first-try"
    again = subprocess.run([*TRAIN, "run_name=first-try"], cwd=tmp_path, capture_output=True, text=True, env=env,
                           check=False)
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1, again.stderr[-2000:]
    assert again.stderr.startswith(f"error: {run} already holds a run") and "another run_name=" in again.stderr
    assert json.loads((run / "training_config.json").read_text()) == record  # the first run is untouched
