"""The config tree composes in every combination, rejects typos at compose time, and reaches the Trainer."""

import importlib.util
import itertools
import json
import os
import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from apa.constants import CONF_DIR
from apa.errors import UserError
from apa.training.recipe import sft_arguments
from tests.conftest import REPO

GROUPS = {
    "model": ["phi4mm", "tiny", "tiny_released", "phi4mm_random"],
    "lora": ["pretrained_r320", "fresh_r64"],
    "trainer": ["paper_table3", "cpu_demo", "seed_3epochs"],
    "data": ["speechocean762", "sample"],
    "prompts": ["paper", "concise", "terse"],
}


def _pairs(choice: tuple[str, ...]) -> set:
    return {((i, a), (j, b)) for (i, a), (j, b) in itertools.combinations(enumerate(choice), 2)}


def _covering_choices() -> list[tuple[str, ...]]:
    """Few combinations in which every option meets every option of every other group (a pairwise covering set,
    picked greedily): each option composes with each option of every other group, in 6 composes instead of 48."""
    every = list(itertools.product(*GROUPS.values()))
    missing = set().union(*map(_pairs, every))
    chosen = []
    while missing:
        best = max(every, key=lambda c: len(_pairs(c) & missing))
        chosen.append(best)
        missing -= _pairs(best)
    return chosen


COVERING = _covering_choices()


def test_the_covering_set_pairs_every_option_with_every_other():
    assert set().union(*map(_pairs, COVERING)) == set().union(*map(_pairs, itertools.product(*GROUPS.values())))
    assert len(COVERING) < 2 ** len(GROUPS)


@pytest.mark.slow
@pytest.mark.parametrize("choice", COVERING)
def test_every_option_composes_with_every_other(make_config, choice):
    overrides = [f"{group}={name}" for group, name in zip(GROUPS, choice, strict=True)]
    cfg = make_config(*overrides)
    assert cfg.trainer.num_train_epochs == {"paper_table3": 4, "seed_3epochs": 3, "cpu_demo": 2}[choice[2]]
    for group, name in zip(GROUPS, choice, strict=True):
        if group != "trainer":  # trainer presets are plain SFTConfig fields, with no name
            assert cfg[group].name == name


def test_defaults_are_the_paper_setup(make_config):
    cfg = make_config()
    assert (cfg.model.name, cfg.lora.name, cfg.data.name, cfg.prompts.name) == (
        "phi4mm", "pretrained_r320", "speechocean762", "paper")
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.init_from) == (320, 640, 0.01, "speech-lora")
    t = cfg.trainer
    # the paper's stated values
    assert (t.num_train_epochs, t.per_device_train_batch_size, t.gradient_accumulation_steps) == (4, 8, 8)
    assert t.learning_rate == 2e-5
    # the official fine-tuning script's values for what the paper leaves unstated
    assert (t.optim, t.adam_beta1, t.adam_beta2, t.adam_epsilon) == ("adamw_torch", 0.9, 0.95, 1e-7)
    assert (t.weight_decay, t.max_grad_norm, t.lr_scheduler_type, t.warmup_steps) == (0.01, 1.0, "linear", 50)
    assert t.bf16 and t.activation_checkpointing and t.activation_checkpointing_kwargs.use_reentrant is False
    assert t.save_strategy == "epoch" and list(t.report_to) == ["tensorboard"] and t.seed == 42 and t.max_length == 2048


def test_the_seed_recipe_is_one_override_away(make_config):
    t = make_config("trainer=seed_3epochs").trainer
    assert (t.num_train_epochs, t.warmup_steps, t.adam_beta2, t.weight_decay, t.learning_rate) == (3, 0.05, 0.999,
                                                                                                   0.0, 2e-5)


def test_every_number_in_the_recipe_configs_says_where_it_comes_from():
    """conf/trainer/paper_table3.yaml and conf/lora/*.yaml: each value line carries its source tag."""
    import yaml

    from tests.conftest import CONF

    tags = ("[paper]", "[script]", "[ours]", "[seed]", "[checkpoint]")
    files = [CONF / "trainer" / "paper_table3.yaml", CONF / "trainer" / "seed_3epochs.yaml",
             CONF / "lora" / "pretrained_r320.yaml", CONF / "lora" / "fresh_r64.yaml"]
    for path in files:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(":")
            if line.startswith((" ", "#", "-")) or not value.strip() or key in ("defaults", "name", "init_from"):
                continue
            if isinstance(yaml.safe_load(value.split("#")[0]), (int, float)) and "train_control_tokens" not in key:
                assert any(tag in line for tag in tags), f"{path.name}: {line!r} does not say where it comes from"


@pytest.mark.slow
@pytest.mark.parametrize(("experiment", "unfreeze"), [("table3_lora_only", []),
                                                      ("table3_unfreeze", ["audio_encoder", "audio_projector"]),
                                                      ("table3", [])])
def test_table3_experiments_are_the_paper_settings(make_config, experiment, unfreeze):
    cfg = make_config(f"experiment={experiment}")
    assert (cfg.lora.name, cfg.prompts.name, cfg.trainer.num_train_epochs) == ("pretrained_r320", "paper", 4)
    assert list(cfg.model.unfreeze) == unfreeze


def test_demo_experiment_selects_tiny_sample_cpu(make_config):
    cfg = make_config("experiment=demo")
    assert (cfg.model.name, cfg.data.name, cfg.trainer.use_cpu) == ("tiny", "sample", True)


@pytest.mark.slow
@pytest.mark.parametrize(
    "override",
    ["trainer.num_train_epoch=2", "lora.rank=8", "model.pth=x", "data.limitt=3", "seed=abc", "lora.r=big"],
)
def test_typos_fail_at_compose_time(make_config, override):
    with pytest.raises((ConfigCompositionException, ConfigKeyError, ValidationError)):
        make_config(override)


@pytest.mark.parametrize(("override", "choices"), [("data.source=ftp", "[local, hub, disk]"),
                                                    ("data.on_label_mismatch=ignore", "[error, skip]"),
                                                    ("model.dtype=fp16", "[auto, bfloat16, float32]")])
def test_a_wrong_choice_fails_at_compose_time_naming_the_choices(make_config, override, choices):
    with pytest.raises(ConfigCompositionException) as failed:
        make_config(override)
    assert f"expected one of {choices}" in str(failed.value.__cause__)


@pytest.mark.slow
def test_choices_are_plain_strings_in_records_and_messages(make_config):
    data = make_config("experiment=demo", "data.source=hub").data
    assert data.source == "hub" and f"{data.source}" == "hub"
    assert json.loads(json.dumps(OmegaConf.to_container(data, resolve=True)))["source"] == "hub"


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["lora=paper_r64"], ["-m", "lora=pretrained_r320,paper_r64"]])
def test_a_renamed_choice_is_refused_in_one_line_naming_the_new_one(argv):
    done = subprocess.run([sys.executable, "train.py", *argv], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip() == (
        "error: lora=paper_r64 was renamed lora=fresh_r64 (its numbers are the seed author's, not the paper's): use "
        "the new name")


def test_a_key_given_twice_is_said_with_the_value_used(capsys):
    """Hydra keeps the last of two values for one key without a word (`lora=pretrained_r320 lora=fresh_r64` trained
    fresh_r64 and recorded both). A base command with an override appended is a common way to write scripts, so it
    is not refused: a warning says which value is used."""
    from apa.command_line import check_command_line

    check_command_line(["experiment=demo", "lora=pretrained_r320", "data.limit=2", "lora=fresh_r64", "++data.limit=3"])
    assert capsys.readouterr().err.splitlines() == [
        "warning: lora is given 2 times (lora=pretrained_r320 lora=fresh_r64): the last, lora=fresh_r64, is used",
        "warning: data.limit is given 2 times (data.limit=2 ++data.limit=3): the last, ++data.limit=3, is used"]
    check_command_line(["-m", "lora=pretrained_r320,fresh_r64", "hydra/launcher=basic", "hydra.launcher.x=1",
                        "~trainer.max_steps"])
    assert capsys.readouterr().err == ""


@pytest.mark.slow
@pytest.mark.parametrize("script", ["train.py", "evaluate.py"])
def test_a_quoted_tilde_is_refused_naming_the_path_meant(script, tmp_path):
    """`"data.path='~/corp'"`: the shell leaves a quoted `~` alone and Hydra passes it on, so the corpus was "not a
    folder" although ~/corp exists. One line names the expanded path; nothing is written."""
    (tmp_path / "home" / "corp").mkdir(parents=True)
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, str(REPO / script), "experiment=demo" if script == "train.py" else
                           "data=sample", "data.path='~/corp'"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip() == (
        "error: data.path=~/corp: `~` is not expanded after `key=` or inside quotes (the shell leaves it, Hydra "
        f"passes it on as it is): give the path as {tmp_path}/home/corp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # no outputs/ folder


def test_batch_and_accumulation_overrides_reach_sft_config(make_config, tmp_path):
    cfg = make_config(
        "trainer.per_device_train_batch_size=4", "trainer.gradient_accumulation_steps=3", "trainer.num_train_epochs=5"
    )
    args = sft_arguments(cfg, tmp_path)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.num_train_epochs) == (4, 3, 5)
    assert args.remove_unused_columns is False and args.dataset_kwargs["skip_prepare_dataset"] is True
    assert args.output_dir == str(tmp_path)


def test_bf16_falls_back_to_fp32_without_a_bf16_gpu(make_config, tmp_path, caplog):
    import torch

    cfg = make_config("trainer=paper_table3")
    args = sft_arguments(cfg, tmp_path)
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        assert args.bf16
    else:
        assert not args.bf16 and "float32" in caplog.text


@pytest.mark.slow
def test_deepspeed_zero2_option_reaches_the_trainer_or_names_the_missing_package(make_config, tmp_path):
    cfg = make_config("experiment=demo", "+trainer/deepspeed=zero2")
    ds = cfg.trainer.deepspeed
    assert ds.zero_optimization.stage == 2 and ds.train_micro_batch_size_per_gpu == "auto"
    if importlib.util.find_spec("deepspeed") is None:
        with pytest.raises(UserError, match="pip install deepspeed"):
            sft_arguments(cfg, tmp_path)
    else:
        assert sft_arguments(cfg, tmp_path).deepspeed["zero_optimization"]["stage"] == 2


@pytest.mark.slow
def test_slurm_launcher_settings_are_overridable(make_config):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tests.conftest import CONF

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", return_hydra_config=True, overrides=[
            "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.account=speech",
            "hydra.launcher.gpus_per_node=4", "hydra.launcher.cpus_per_task=6", "hydra.launcher.timeout_min=90"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.account, launcher.gpus_per_node, launcher.cpus_per_task,
            launcher.timeout_min) == ("gpu", "speech", 4, 6, 90)
    assert launcher.tasks_per_node == 4  # one task (rank) per GPU


def test_paper_tags_mark_only_what_the_paper_states():
    """`# [paper]` in conf/ tags a value the paper states (arXiv 2509.02915: 4 epochs, batch 8 x accumulation 8,
    learning rate 2e-5), with the paper's value; everything else carries another source's tag."""
    import yaml

    stated = {"num_train_epochs": 4, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 8,
              "learning_rate": 2e-5}
    tagged = []
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        for line in path.read_text().splitlines():
            code, _, comment = line.partition("#")
            if "[paper]" in comment and code.strip():
                key, value = next(iter(yaml.safe_load(code).items()))
                tagged.append((path.relative_to(CONF_DIR).as_posix(), key))
                assert key in stated and value == stated[key], f"{path.name}: {line.strip()}"
    assert {key for _, key in tagged} == set(stated)  # and each stated value is tagged somewhere
