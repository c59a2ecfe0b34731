"""Data-parallel training with torchrun on CPU (gloo), and what a multi-process launch without a rendezvous gets."""

import json
import re

import pytest

from apa import distributed
from apa.errors import UserError

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out


def test_torchrun_two_ranks_share_one_run_folder_and_split_the_batches(torchrun_two_ranks):
    runs = list((torchrun_two_ranks / "outputs" / "runs").iterdir())
    # <time>_<lora>_<the overrides typed, capped>: the same for both ranks, which compose it each
    name = r"[\d_-]{19}_fresh_r64_data\.limit=4,prompts=terse,trainer\.[\w.=,]+_[0-9a-f]{8}"
    assert len(runs) == 1 and re.fullmatch(name, runs[0].name), runs
    run = runs[0]
    record = json.loads((run / "training_config.json").read_text())
    # 8 examples, 2 ranks x batch 2: each rank takes 2 of the 4 batches of an epoch; 2 optimizer steps per epoch
    assert record["data"]["world_size"] == 2
    assert record["data"]["batches_per_rank_per_epoch"] == 2
    assert record["global_steps"] == 4
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-epoch-1", "checkpoint-epoch-2"]
    assert sorted(p.name for p in (run / "checkpoint-epoch-2").glob("rng_state_*")) == ["rng_state_0.pth",
                                                                                        "rng_state_1.pth"]
    assert (run / "final_model" / "adapter_model.safetensors").exists()
    # rank 1 let Hydra write nothing: one config, and one rank's log lines in train.log
    assert (run / ".hydra" / "config.yaml").exists()
    assert (run / "train.log").read_text().count("Parameters (lora=fresh_r64)") == 1
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))


def test_several_processes_without_a_rendezvous_store_must_name_the_run_folder(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    monkeypatch.delenv(distributed.RUN_STAMP_ENV, raising=False)
    with pytest.raises(UserError, match="pass hydra.run.dir="):
        distributed.launch_overrides(["experiment=demo"])
    # with a run folder named, rank 1 only turns Hydra's own files off
    assert distributed.launch_overrides(["hydra.run.dir=/tmp/x"]) == [
        "hydra.output_subdir=null", "hydra/job_logging=stdout", "hydra.job_logging.root.level=WARNING"]


def test_a_single_process_gets_no_extra_overrides(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.launch_overrides(["experiment=demo"]) == []
