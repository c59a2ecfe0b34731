"""train.py as a user runs it: a Hydra multirun over both LoRA configs, in a subprocess (conftest.demo_sweep),
each job launched by hydra/launcher=submitit_local."""

import json

import pytest

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out

TARGET_REGEX = r"model.layers.\d+.((self_attn.(qkv|o)_proj)|(mlp.(gate_up|down)_proj))"


def test_multirun_sweeps_both_lora_configs_into_their_own_folders(demo_sweep):
    jobs = sorted(p for p in demo_sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [j.name.split("_")[0] for j in jobs] == ["fresh", "pretrained"]
    assert len(list((demo_sweep / ".submitit").glob("*/*_result.pkl"))) == 2  # both ran as submitit jobs
    expected = {"pretrained": (320, 640, 0.01), "fresh": (64, 128, 0.05)}
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


def test_the_sweep_ends_with_its_summary_and_the_report_to_open(demo_sweep):
    """The jobs ran in submitit's processes: the summary lists them in job order, as each job recorded its outcome
    (named by the LoRA choice alone, the only override that sets them apart), then where the report is."""
    log = demo_sweep.with_name(demo_sweep.name + ".log").read_text()
    summary = log[log.rindex("Sweep "):].splitlines()
    assert summary[0] == f"Sweep {demo_sweep}: 2 job(s), 2 ok", log[-3000:]
    assert [line.split()[:2] for line in summary[1:3]] == [["ok", "pretrained_r320_0"], ["ok", "fresh_r64_1"]]
    assert summary[3] == f"Next: open {demo_sweep}/report.html in a browser (apa report {demo_sweep} writes it again)"
