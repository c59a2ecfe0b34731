"""Interrupted training resumes to the same adapter; SIGTERM saves a checkpoint and stops cleanly."""

import json
import os
import shlex
import signal

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from apa.run_folder import resumable_checkpoints
from apa.training.recipe import build_trainer, fit, train
from tests.conftest import RESUME_OVERRIDES, compose_config

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out


class SendSigterm(TrainerCallback):
    """SIGTERM to this very process at the start of a given step, as SLURM preemption would."""

    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def _global_step(run_dir) -> int:
    return json.loads((run_dir / "training_config.json").read_text())["global_steps"]


def _adapter(run_dir):
    return load_file(run_dir / "final_model" / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("whole")
    train(compose_config(*RESUME_OVERRIDES), run_dir)
    return run_dir





def test_sigkill_in_epoch_2_then_resume_gives_the_same_adapter_after_the_same_steps(uninterrupted,
                                                                                       sigkilled_in_epoch_2):
    """A real `kill -9` of train.py during epoch 2 (conftest.sigkilled_in_epoch_2), then resume=true."""
    run_dir = sigkilled_in_epoch_2
    assert not (run_dir / "checkpoint-epoch-2").exists() and not (run_dir / "final_model").exists()
    assert [p.name for p in resumable_checkpoints(run_dir)] == ["checkpoint-epoch-1"]
    train(compose_config(*RESUME_OVERRIDES, "resume=true"), run_dir)
    expected, got = _adapter(uninterrupted), _adapter(run_dir)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert _global_step(run_dir) == _global_step(uninterrupted) == 8


def test_sigterm_saves_a_checkpoint_exits_cleanly_and_resumes(uninterrupted, tmp_path):
    trainer, resume_from, record = build_trainer(compose_config(*RESUME_OVERRIDES), tmp_path)
    trainer.add_callback(SendSigterm(1))
    with pytest.raises(SystemExit) as stopped:
        fit(trainer, resume_from, record)
    assert stopped.value.code == 128 + signal.SIGTERM
    # the step in flight finished and was saved (mid-epoch 1, so named by step); nothing half-written remains
    assert [p.name for p in resumable_checkpoints(tmp_path)] == ["checkpoint-step-2"]
    assert not list(tmp_path.glob("checkpoint-[0-9]*")) and not (tmp_path / "final_model").exists()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored
    train(compose_config(*RESUME_OVERRIDES, "resume=true"), tmp_path)
    expected, got = _adapter(uninterrupted), _adapter(tmp_path)
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_same_config_and_seed_give_a_bit_identical_adapter(uninterrupted, tmp_path):
    train(compose_config(*RESUME_OVERRIDES), tmp_path)
    expected, got = _adapter(uninterrupted), _adapter(tmp_path)
    assert all(torch.equal(expected[k], got[k]) for k in expected)


# The recipe's own loader settings (trainer=paper_table3: 2 persistent workers) with LoRA dropout 0.05 (fresh_r64),
# 4 optimizer steps per epoch at gradient accumulation 2. Before the loader had its own generator, a resumed run
# recreated the persistent workers and the global RNG (dropout's) moved by one draw: 1.3e-3 apart after 8 steps.
WORKER_OVERRIDES = (*RESUME_OVERRIDES, "data.limit=8", "trainer.gradient_accumulation_steps=2",
                    "trainer.dataloader_num_workers=2", "trainer.dataloader_persistent_workers=true")


class SendSigint(SendSigterm):
    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture(scope="module")
def uninterrupted_with_workers(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("whole-workers")
    cfg = compose_config(*WORKER_OVERRIDES)
    assert cfg.lora.dropout == 0.05 and cfg.trainer.dataloader_num_workers == 2
    train(cfg, run_dir)
    return run_dir


@pytest.mark.parametrize(("signal_at", "saved"), [(1, "checkpoint-step-2"), (3, "checkpoint-epoch-1")],
                         ids=["mid-epoch", "epoch-end"])
def test_resume_under_persistent_workers_and_dropout_gives_the_same_adapter(uninterrupted_with_workers, tmp_path,
                                                                              signal_at, saved):
    trainer, resume_from, record = build_trainer(compose_config(*WORKER_OVERRIDES), tmp_path)
    trainer.add_callback(SendSigint(signal_at))
    with pytest.raises(SystemExit) as stopped:
        fit(trainer, resume_from, record)
    assert stopped.value.code == 128 + signal.SIGINT
    assert resumable_checkpoints(tmp_path)[-1].name == saved
    train(compose_config(*WORKER_OVERRIDES, "resume=true"), tmp_path)
    expected, got = _adapter(uninterrupted_with_workers), _adapter(tmp_path)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert _global_step(tmp_path) == _global_step(uninterrupted_with_workers) == 8


class SendSigintTwice(SendSigterm):
    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)  # the first: save after this step, then stop
            os.kill(os.getpid(), signal.SIGINT)  # the second: stop at once


def test_a_second_ctrl_c_stops_at_once_in_one_line_with_the_resume_command(tmp_path, capsys):
    from apa.errors import Interrupted, one_line_errors

    run_dir = tmp_path / "my runs" / "a=1"  # the printed command must survive a space and an '='
    trainer, resume_from, record = build_trainer(compose_config(*RESUME_OVERRIDES), run_dir)
    trainer.add_callback(SendSigintTwice(1))
    with pytest.raises(SystemExit) as stopped:
        one_line_errors(fit)(trainer, resume_from, record)
    assert stopped.value.code == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]  # (the loading and progress bars came before)
    err = err[err.index("error: "):]
    assert err.startswith("error: stopped at once by a second SIGINT")
    assert "the step in progress was not saved" in err
    command = err[err.index("`resume=true ") + 1 : err.rindex("`")]
    assert shlex.split(command) == ["resume=true", f"hydra.run.dir='{run_dir}'"]
    assert issubclass(Interrupted, KeyboardInterrupt)
