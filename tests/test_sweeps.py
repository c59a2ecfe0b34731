"""Every `-m` sweep (apa.callbacks.SweepSummary, on by default in conf/train.yaml), run as a user runs it: job folders
named by their own overrides, a summary at the end, a foreseeable job failure without Hydra's traceback, and no hub
refused before the first job in one line, leaving no sweep folder."""

import os
import subprocess
import sys

import pytest

from apa.callbacks import EvaluateAndCompare, SweepSummary
from apa.reporting.sweep import JobResult
from tests.conftest import REPO

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out

SWEEP = (sys.executable, str(REPO / "train.py"), "-m", "experiment=demo", "lora=fresh_r64", "prompts=terse",
         "trainer.num_train_epochs=1", "trainer.report_to=[]")
HINT = "`hf download microsoft/Phi-4-multimodal-instruct --revision refs/pr/70 --local-dir <dir>`"


def run(cmd, **env: str) -> subprocess.CompletedProcess:
    """`cmd` in the repository (every folder it writes is given: hydra.sweep.dir in a tmp_path)."""
    environ = {k: v for k, v in {**os.environ, "HYDRA_FULL_ERROR": "", **env}.items() if v != ""}
    return subprocess.run(list(cmd), cwd=REPO, capture_output=True, text=True, env=environ, check=False)


@pytest.mark.parametrize("launcher", ["basic", "submitit_local"])
def test_a_sweep_names_jobs_by_their_own_overrides_and_ends_with_a_summary_not_a_traceback(tmp_path, launcher):
    """One job trains, one is refused (data.limit=0): the sweep goes on, then ends with one line per job, how to
    train the failed one alone, and exit 2. The same with jobs in processes of their own (submitit, as on SLURM):
    each job's outcome reaches the sweep's process through the sweep folder (it re-raised the job's error as
    Hydra's traceback before), and a job's removed folder is not written into again (its log line crashed the job)."""
    sweep = tmp_path / "sweep"
    done = run([*SWEEP, "data.limit=2,0", f"hydra.sweep.dir={sweep}", f"hydra/launcher={launcher}"])
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Error executing job" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    # in its own process, the job's error went to the launcher's log: the sweep's process prints it whole
    job = "" if launcher == "basic" else "fresh_r64_data.limit=0_1: "
    assert errors == [f"error: {job}data.limit=0 must be at least 1, or null for the whole split",
                      "error: 1 of 2 jobs failed: fresh_r64_data.limit=0_1 (see above)"]
    summary = done.stdout[done.stdout.rindex("Sweep "):].splitlines()
    assert summary[0] == f"Sweep {sweep}: 2 job(s), 1 ok, 1 failed"
    assert summary[1].split() == ["ok", "fresh_r64_data.limit=2_0", str(sweep / "fresh_r64_data.limit=2_0")]
    assert summary[2].split()[:2] == ["failed", "fresh_r64_data.limit=0_1"]
    assert "data.limit=0 must be at least 1" in summary[2]
    assert summary[2].endswith("(no log: it stopped before logging)")
    assert summary[3] == ("Once fixed, train the failed job alone: python train.py experiment=demo lora=fresh_r64 "
                          "prompts=terse trainer.num_train_epochs=1 'trainer.report_to=[]' data.limit=0 "
                          f"\"hydra.run.dir='{sweep}/fresh_r64_data.limit=0_1'\"")
    # only the swept key names the jobs: the shared ones are in the sweep's multirun.yaml
    assert sorted(p.name for p in sweep.iterdir()) == [".submitit"] * (launcher != "basic") + [
        "fresh_r64_data.limit=2_0", "multirun.yaml"]
    assert (sweep / "fresh_r64_data.limit=2_0" / "final_model").is_dir()


@pytest.mark.parametrize("launcher", ["basic", "submitit_local"])
def test_a_sweep_whose_jobs_all_fail_leaves_no_sweep_folder(tmp_path, launcher):
    sweep = tmp_path / "sweep"
    done = run([*SWEEP, "data.limit=0,-1", f"hydra.sweep.dir={sweep}", f"hydra/launcher={launcher}"])
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert f"(no job wrote anything: {sweep} is removed)" in done.stdout
    assert "2 job(s), 0 ok, 2 failed" in done.stdout and not sweep.exists()


def test_a_sweep_never_removes_a_folder_it_did_not_make(tmp_path):
    sweep = tmp_path / "mine"
    sweep.mkdir()
    done = run([*SWEEP, "data.limit=0,-1", f"hydra.sweep.dir={sweep}"])
    assert done.returncode == 2 and sweep.is_dir() and "is removed" not in done.stdout


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "", "HF_ENDPOINT": "http://127.0.0.1:9"}],
                         ids=["HF_HUB_OFFLINE", "unreachable"])
@pytest.mark.parametrize("how", ["train.py -m", "multirun.sh"])
def test_a_sweep_without_the_hub_is_refused_before_its_first_job_in_one_line(tmp_path, env, how):
    """The default model is the hub id; nothing is cached: one `error:` line naming `hf download`, exit 2, no
    sweep folder (checked once before the first job, not once per job and then Hydra's traceback)."""
    sweep = tmp_path / "sweep"
    cmd = ([sys.executable, str(REPO / "train.py"), "-m", "lora=pretrained_r320,fresh_r64"] if how == "train.py -m"
           else ["bash", str(REPO / "multirun.sh")])
    done = run([*cmd, f"hydra.sweep.dir={sweep}"], HF_HUB_CACHE=str(tmp_path / "empty-cache"),
               PYTHON=sys.executable, **env)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    error = done.stderr.strip()
    assert error.startswith("error: model.path=microsoft/Phi-4-multimodal-instruct is not in the local hub cache")
    assert HINT in error and "huggingface-cli" not in error
    assert "Launching" not in done.stdout and not sweep.exists()


def test_the_summary_of_a_sweep_that_went_well_names_the_next_command(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "outputs" / "multirun" / "lr"
    callback = SweepSummary()
    callback.sweep_dir = sweep
    callback.jobs = [JobResult("fresh_r64_0", sweep / "fresh_r64_0", ["lora=fresh_r64"]),
                     JobResult("pretrained_r320_1", sweep / "pretrained_r320_1", ["lora=pretrained_r320"])]
    callback.on_multirun_end(None)
    assert capsys.readouterr().out.splitlines() == [
        "Sweep outputs/multirun/lr: 2 job(s), 2 ok",
        "  ok      fresh_r64_0        outputs/multirun/lr/fresh_r64_0",
        "  ok      pretrained_r320_1  outputs/multirun/lr/pretrained_r320_1",
        "Next: apa compare outputs/multirun/lr   (tables and plots; apa report outputs/multirun/lr writes report.html)"]
    assert EvaluateAndCompare().next_steps("s") == ["Next: open s/report.html in a browser (apa report s writes it "
                                                     "again)"]


def test_a_sweep_into_a_folder_that_holds_results_is_refused_before_hydra_writes_anything(tmp_path):
    """`train.py -m … hydra.sweep.dir=<an earlier sweep>` used to refuse each job with a traceback after Hydra had
    written its multirun.yaml over the earlier sweep's record: the folder is now left exactly as it was."""
    sweep = tmp_path / "earlier"
    (sweep / "fresh_r64_0").mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("how the earlier sweep was made\n")
    done = run([*SWEEP, "data.limit=2", f"hydra.sweep.dir={sweep}"])
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {sweep} already holds results (fresh_r64_0, ")
    assert (sweep / "multirun.yaml").read_text() == "how the earlier sweep was made\n"
    assert sorted(p.name for p in sweep.iterdir()) == ["fresh_r64_0", "multirun.yaml"]


def test_multirun_sh_reads_a_quoted_sweep_folder_as_hydra_does(tmp_path):
    """`./multirun.sh "hydra.sweep.dir='/a b'"`: its own check compared the quoted text and let a finished sweep be
    trained into (its multirun.yaml overwritten); the quotes are grammar, and the folder is refused untouched."""
    sweep = tmp_path / "sweep 133"
    (sweep / "pretrained_r320_0").mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("the earlier sweep\n")
    done = subprocess.run(["bash", str(REPO / "multirun.sh"), "experiment=demo", f"hydra.sweep.dir='{sweep}'"],
                          cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 2 and done.stderr.strip() == (f"error: {sweep} already holds results; choose another "
                                                            "hydra.sweep.dir (or leave it unset)")
    assert (sweep / "multirun.yaml").read_text() == "the earlier sweep\n"


TWICE = ("error: jobs 0 and 1 of this sweep would train the same config: {what}. The same config trains with the "
         "same seed, so the second job would repeat the first, not replicate it: give each value once (for "
         "replicates, sweep the seed: seed=1,2,3)")


LORA_TWICE = "lora=fresh_r64 is given twice (lora=fresh_r64,fresh_r64)"


@pytest.mark.parametrize(("how", "values", "what"), [
    ("multirun.sh", ["lora=fresh_r64,fresh_r64"], LORA_TWICE),
    ("train.py -m", ["seed=1,2", "lora=fresh_r64,fresh_r64"], LORA_TWICE),
    ("train.py -m", ["trainer.num_train_epochs=2,2.0"],
     "trainer.num_train_epochs=2 and trainer.num_train_epochs=2.0 are one value"),
], ids=["multirun.sh", "with seeds", "spelt twice"])
def test_a_sweep_that_would_train_one_config_twice_is_refused_before_its_first_job(tmp_path, how, values, what):
    """`./multirun.sh experiment=demo lora=fresh_r64,fresh_r64` trained the same job twice (seed 42 both times), and
    its comparison showed the pair as two seeds; its banner said "train both LoRA configs". Now the banner says what
    the command line asked for, and the sweep is refused in one line before any job or folder."""
    sweep = tmp_path / "sweep"
    cmd = (["bash", str(REPO / "multirun.sh")] if how == "multirun.sh" else [sys.executable, str(REPO / "train.py"),
                                                                           "-m"])
    done = run([*cmd, "experiment=demo", *values, f"hydra.sweep.dir={sweep}"], PYTHON=sys.executable)
    assert done.returncode == 2 and done.stderr.strip() == TWICE.format(what=what), done.stderr[-3000:]
    assert not sweep.exists() and "Launching" not in done.stdout
    if how == "multirun.sh":
        assert done.stdout.splitlines() == [
            "== train lora=fresh_r64,fresh_r64 (your lora=, in place of this script's lora=pretrained_r320,fresh_r64)"
            f", evaluate every checkpoint of each job, compare: {sweep}"]


def test_multirun_sh_on_several_gpus_trains_the_lora_values_given_and_refuses_one_given_twice(tmp_path):
    """GPUS=2: each job's own lora= came first and the command line's replaced it, so every job trained the value
    given, in folders named after the script's two configs. Each value given now trains once, in its own folder
    (LAUNCHER=echo prints the commands; PYTHON=true stands in for compare and report)."""
    sweep = tmp_path / "sweep"
    env = {"GPUS": "2", "LAUNCHER": "echo", "PYTHON": "true"}
    done = run(["bash", str(REPO / "multirun.sh"), "lora=fresh_r64", f"hydra.sweep.dir={sweep}"], **env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:3] == [
        "== train lora=fresh_r64 (your lora=, in place of this script's lora=pretrained_r320,fresh_r64) on 2 GPUs "
        f"each, evaluate every checkpoint of each job, compare: {sweep}",
        f"== train fresh_r64 on 2 GPUs: echo -> {sweep}/fresh_r64_0",
        f"train.py lora=fresh_r64 hydra.sweep.dir={sweep} hydra.run.dir={sweep}/fresh_r64_0"]
    done = run(["bash", str(REPO / "multirun.sh"), "lora=fresh_r64,fresh_r64", f"hydra.sweep.dir={sweep}"], **env)
    assert done.returncode == 2 and done.stdout == "" and done.stderr.strip() == (
        "error: lora=fresh_r64 is given twice (lora=fresh_r64,fresh_r64): two jobs would train the same config with "
        "the same seed, the second a repeat of the first, not a replicate: give each value once")
