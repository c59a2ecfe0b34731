"""DeepSpeed ZeRO-2 on 2 CPU ranks (gloo): the DDP run's adapter, a plain PEFT final_model/, resume after SIGINT;
ZeRO-3 refused in one line (apa.training.engine says why). Figures: docs/benchmarks.md, "DeepSpeed on CPU ranks"."""

import json
import subprocess
import sys
from importlib.metadata import version

import pytest
import torch
from safetensors.torch import load_file

from apa.errors import UserError
from apa.run_folder import resumable_checkpoints
from apa.training.engine import training_engine
from apa.training.start import start
from tests.conftest import REPO, TORCHRUN, TWO_RANK_OVERRIDES, compose_config

# ZeRO-2 averages the gradients in its own flat buckets and clips and steps on flat fp32 partitions: the same
# arithmetic as DDP in another order. Measured on the 2-core machine: 2.8e-7 at most after 4 steps (weights up to 0.75)
ZERO2_VS_DDP = 1e-5


def _adapter(run_dir):
    return load_file(run_dir / "final_model" / "adapter_model.safetensors")


def _record(run_dir):
    return json.loads((run_dir / "training_config.json").read_text())


def _max_abs_difference(a, b) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_zero2_gives_the_ddp_adapter_and_records_its_engine(torchrun_two_ranks, deepspeed_zero2):
    (ddp,) = (torchrun_two_ranks / "outputs" / "runs").iterdir()
    difference = _max_abs_difference(_adapter(ddp), _adapter(deepspeed_zero2))
    assert 0 < difference <= ZERO2_VS_DDP, difference  # 0 would mean ZeRO did not run
    zero2 = _record(deepspeed_zero2)
    assert _record(ddp)["engine"] == {"name": "torch"}
    assert zero2["engine"] == {"name": "deepspeed", "zero_stage": 2, "version": version("deepspeed")}
    assert zero2["config"]["trainer"]["deepspeed"]["zero_optimization"]["stage"] == 2
    assert zero2["global_steps"] == _record(ddp)["global_steps"] == 4
    # DeepSpeed's own checkpoint layout inside the epoch checkpoint: one optimizer shard per rank
    shards = sorted(p.name for p in (deepspeed_zero2 / "checkpoint-epoch-2").glob("global_step*/*optim_states.pt"))
    assert shards == ["zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]


def test_zero2_final_model_opens_with_plain_peft_without_deepspeed(deepspeed_zero2):
    """Evaluation's loader (PeftModel.from_pretrained on the base) reads a ZeRO run's final_model/, with DeepSpeed
    never imported: the folder is a plain PEFT adapter."""
    from peft import PeftModel

    from apa.checkpoint.adapters import load_for_eval
    from apa.run_folder import resolved_config

    assert "deepspeed" not in sys.modules, "something in this test session imported DeepSpeed: the check means nothing"
    model, processor = load_for_eval(resolved_config(deepspeed_zero2).model, deepspeed_zero2 / "final_model")
    assert isinstance(model, PeftModel)
    saved = _adapter(deepspeed_zero2)
    loaded = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert len(loaded) == sum("lora_" in k for k in saved) > 0
    for key, value in saved.items():
        if "lora_" in key:
            peft_key = key.replace(".weight", ".default.weight")
            assert torch.equal(loaded[peft_key], value), key
    assert "deepspeed" not in sys.modules


def test_zero2_sigint_mid_epoch_then_resume_gives_the_uninterrupted_adapter(deepspeed_zero2, deepspeed_zero2_sigint):
    run_dir = deepspeed_zero2_sigint
    log = (run_dir / "train.log").read_text()
    assert "Stopped by SIGINT after step 3" in log, log[-2000:]
    # both ranks stopped after the same step, mid-epoch 2, and wrote their shards of one checkpoint
    assert [p.name for p in resumable_checkpoints(run_dir)] == ["checkpoint-epoch-1", "checkpoint-step-3"]
    shards = sorted(p.name for p in (run_dir / "checkpoint-step-3").glob("global_step3/*optim_states.pt"))
    assert len(shards) == 2 and not (run_dir / "final_model").exists()
    resumed = subprocess.run([*TORCHRUN, *TWO_RANK_OVERRIDES, "+trainer/deepspeed=zero2", "resume=true",
                              f"hydra.run.dir={run_dir}"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = _adapter(deepspeed_zero2), _adapter(run_dir)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected), _max_abs_difference(expected, got)
    assert _record(run_dir)["global_steps"] == 4
    assert [r["from"] for r in _record(run_dir)["resumes"]] == ["checkpoint-step-3"]


def test_zero3_is_refused_in_one_line_before_anything_is_written(tmp_path):
    cfg = compose_config("experiment=demo", "+trainer/deepspeed=zero2", "trainer.deepspeed.zero_optimization.stage=3")
    with pytest.raises(UserError, match="ZeRO stage 3 cannot train this model yet.*'ds_status'"):
        start(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").iterdir())
    assert training_engine(compose_config("experiment=demo", "+trainer/deepspeed=zero2"))["zero_stage"] == 2
    assert training_engine(compose_config("experiment=demo")) == {"name": "torch"}
