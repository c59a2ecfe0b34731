"""train.py as a user runs it: a Hydra multirun over both LoRA configs, in a subprocess."""

import json
import subprocess
import sys

from tests.conftest import REPO

TARGET_REGEX = r"model.layers.\d+.((self_attn.(qkv|o)_proj)|(mlp.(gate_up|down)_proj))"


def test_multirun_sweeps_both_lora_configs_into_their_own_folders(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable, "train.py", "-m", "experiment=demo", "lora=pretrained_r320,paper_r64", "prompts=terse",
        "data.limit=4", "trainer.num_train_epochs=2", "trainer.per_device_train_batch_size=4",
        "trainer.gradient_accumulation_steps=2", "trainer.report_to=[]", f"hydra.sweep.dir={sweep}",
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [j.name.split("_")[0] for j in jobs] == ["paper", "pretrained"]
    expected = {"pretrained": (320, 640, 0.01), "paper": (64, 128, 0.05)}
    for job in jobs:
        assert sorted(p.name for p in job.glob("checkpoint-*")) == ["checkpoint-epoch-1", "checkpoint-epoch-2"]
        assert (job / ".hydra" / "config.yaml").exists() and (job / "train.log").stat().st_size > 0
        adapter = json.loads((job / "final_model" / "adapter_config.json").read_text())
        assert (adapter["r"], adapter["lora_alpha"], adapter["lora_dropout"]) == expected[job.name.split("_")[0]]
        assert adapter["target_modules"] == TARGET_REGEX
        state = json.loads((job / "checkpoint-epoch-2" / "trainer_state.json").read_text())
        # 8 examples, batch 4, accumulation 2: one optimizer step per epoch
        assert (state["train_batch_size"], state["global_step"]) == (4, 2)
        args = json.loads((job / "training_config.json").read_text())["config"]["trainer"]
        assert args["gradient_accumulation_steps"] == 2
