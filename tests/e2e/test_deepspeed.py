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

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out

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


# evaluation's loader in a fresh process where DeepSpeed cannot be imported (None in sys.modules: `import deepspeed`
# fails and importlib.util.find_spec says it is absent, as when it is not installed)
NO_DEEPSPEED_LOAD = """
import sys
sys.modules["deepspeed"] = None
from peft import PeftModel
from safetensors.torch import load_file
import torch
from apa.checkpoint.adapters import load_for_eval
from apa.run_folder import resolved_config
run = sys.argv[1]
model, processor = load_for_eval(resolved_config(run).model, run + "/final_model")
assert isinstance(model, PeftModel)
state = model.state_dict()
saved = {k: v for k, v in load_file(run + "/final_model/adapter_model.safetensors").items() if "lora_" in k}
assert saved and all(torch.equal(state[k.replace(".weight", ".default.weight")], v) for k, v in saved.items())
print("loaded", len(saved), "LoRA tensors")
"""


def test_zero2_final_model_opens_with_plain_peft_without_deepspeed(deepspeed_zero2):
    """Evaluation's loader (PeftModel.from_pretrained on the base) reads a ZeRO run's final_model/ where DeepSpeed
    cannot be imported: the folder is a plain PEFT adapter, every LoRA tensor as saved."""
    done = subprocess.run([sys.executable, "-c", NO_DEEPSPEED_LOAD, str(deepspeed_zero2)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("loaded ") and int(done.stdout.split()[1]) > 0


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
