"""Interrupted training resumes to the same adapter; SIGTERM saves a checkpoint and stops cleanly."""

import os
import signal

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from apa.training import build_trainer, fit, resumable_checkpoints, train
from tests.conftest import compose_config

# 4 utterances -> 8 examples, batch 2: 4 optimizer steps an epoch, 2 epochs; LoRA dropout on, so RNG state matters
OVERRIDES = ("experiment=demo", "prompts=terse", "lora=paper_r64", "data.limit=4", "trainer.num_train_epochs=2",
             "trainer.per_device_train_batch_size=2", "trainer.report_to=[]", "trainer.logging_steps=1")


class Crash(TrainerCallback):
    """Fail at the start of a given step, as a killed process would stop there."""

    def __init__(self, step: int, how: str):
        self.step, self.how = step, how

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            if self.how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                raise RuntimeError("simulated crash")


def _adapter(run_dir):
    return load_file(run_dir / "final_model" / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("whole")
    train(compose_config(*OVERRIDES), run_dir)
    return run_dir


def _interrupted_then_resumed(run_dir, step, how):
    trainer, resume_from, record = build_trainer(compose_config(*OVERRIDES), run_dir)
    trainer.add_callback(Crash(step, how))
    return trainer, resume_from, record


def test_crash_in_epoch_2_then_resume_gives_the_same_adapter(uninterrupted, tmp_path):
    trainer, resume_from, record = _interrupted_then_resumed(tmp_path, 6, "crash")
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(trainer, resume_from, record)
    assert [p.name for p in resumable_checkpoints(tmp_path)] == ["checkpoint-epoch-1"]
    assert not (tmp_path / "final_model").exists()
    train(compose_config(*OVERRIDES, "resume=true"), tmp_path)
    expected, got = _adapter(uninterrupted), _adapter(tmp_path)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_sigterm_saves_a_checkpoint_exits_cleanly_and_resumes(uninterrupted, tmp_path):
    trainer, resume_from, record = _interrupted_then_resumed(tmp_path, 1, "sigterm")
    with pytest.raises(SystemExit) as stopped:
        fit(trainer, resume_from, record)
    assert stopped.value.code == 128 + signal.SIGTERM
    # the step in flight finished and was saved (mid-epoch 1, so named by step); nothing half-written remains
    assert [p.name for p in resumable_checkpoints(tmp_path)] == ["checkpoint-step-2"]
    assert not list(tmp_path.glob("checkpoint-[0-9]*")) and not (tmp_path / "final_model").exists()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored
    train(compose_config(*OVERRIDES, "resume=true"), tmp_path)
    expected, got = _adapter(uninterrupted), _adapter(tmp_path)
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_same_config_and_seed_give_a_bit_identical_adapter(uninterrupted, tmp_path):
    train(compose_config(*OVERRIDES), tmp_path)
    expected, got = _adapter(uninterrupted), _adapter(tmp_path)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
