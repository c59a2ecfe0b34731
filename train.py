"""Fine-tune Phi-4-multimodal's speech LoRA for pronunciation assessment.

    python train.py experiment=demo lora=pretrained_r320          # tiny model, bundled sample, CPU
    python train.py -m experiment=demo lora=pretrained_r320,fresh_r64
    python train.py model=phi4mm data.path=/data/speechocean762 lora=fresh_r64
    python train.py resume=true hydra.run.dir=<run>              # continue a run with its own overrides
    torchrun --nproc_per_node=4 train.py lora=fresh_r64          # data parallel: one run folder, rank 0 writes
"""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from apa.command_line import check_command_line
from apa.config import register_configs
from apa.distributed import export_submitit_environment, launch_overrides
from apa.errors import StopSignals, one_line_errors, override_arg

register_configs()


def resume_config(cfg: DictConfig, run_dir: Path, given: list[str]) -> DictConfig:
    """With resume=true: the run's own saved overrides, then this command's (a conflicting one is refused later,
    with the differences listed), so that a forgotten override is not a different run."""
    if not cfg.resume:
        return cfg
    from hydra import compose

    from apa.command_line import check_renamed_choices, override_keys
    from apa.run_folder import read_record, read_yaml

    read_record(run_dir)  # a run folder of another format is refused here, in one line
    saved = run_dir / ".hydra" / "overrides.yaml"
    repeated = set(override_keys(given)) | {"resume", "extend", "allow_other_versions"}
    fix = (f"It is the record of the command the run was started with: restore it, or give every override of the run "
           f"again with resume=true (and remove {saved})")
    own = [o for o in read_yaml(saved, fix) if override_keys([o])[0] not in repeated] if saved.exists() else []
    check_renamed_choices(own)
    return compose(config_name="train", overrides=[*own, *given])


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@one_line_errors
def main(cfg: DictConfig) -> None:
    from apa.checkpoint.hub import check_config_hub_access
    from apa.distributed import rank

    export_submitit_environment()  # RANK etc. inside a multi-task SLURM job, before rank() is read
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    # until the first optimizer step, SIGTERM or Ctrl-C stops the start at once (nothing to save yet); from then on
    # training finishes the step and saves a checkpoint first (apa.training.recipe.StopOnSignal)
    signals = StopSignals().install()
    started, failed, stopped = None, True, False
    try:
        cfg = resume_config(cfg, run_dir, list(hydra_cfg.overrides.task))
        from apa.training.start import start

        # once, before anything is written into the folder: check the config, lock, check the folder; then the hub
        started = start(cfg, run_dir)
        check_config_hub_access(cfg)
        hydra_files = {"config.yaml": OmegaConf.to_yaml(cfg),
                       "hydra.yaml": OmegaConf.to_yaml({"hydra": hydra_cfg}),
                       "overrides.yaml": OmegaConf.to_yaml(list(hydra_cfg.overrides.task))}
        from apa.training.recipe import train  # torch, transformers, TRL: only once the start goes ahead

        final, started = train(cfg, run_dir, hydra_files, started, signals), None  # train() releases the lock
        if rank() == 0:
            from apa.reporting.model_card import write_model_card

            write_model_card(run_dir)  # this project's card (README.md), in place of TRL's generic one
        failed = False
    except (Exception, KeyboardInterrupt):  # a signal's KeyboardInterrupt, or what it broke (a half-done import)
        stopped = signals.received is not None and signals.later is None  # before the first step: said below
        if not stopped:
            raise
    finally:
        signals.restore()
        if started is not None and started[0] is not None:
            started[0].release()  # refused after the lock was taken (the hub check)
        if failed and rank() == 0:
            from apa.run_folder.check import discard_failed_start

            discard_failed_start(run_dir)  # no run began: no half-made folder (.hydra/ and a log) is left behind
        if run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()  # a refused start leaves no empty folder behind (Hydra made it for this job)
    if stopped:  # said once the start is cleaned up: what is left decides how to go on
        from apa.training.start import stopped_before_training

        raise stopped_before_training(run_dir, signals.received)
    which = "every epoch with" if any(run_dir.glob("checkpoint-epoch-*")) else "it with"
    print(f"Trained: {final}\nEvaluate {which}: python evaluate.py {override_arg('run_dir', run_dir)}"
          + (" checkpoint=all" if which.startswith("every") else ""))


if __name__ == "__main__":
    one_line_errors(check_command_line)(sys.argv[1:])
    sys.argv += one_line_errors(launch_overrides)(sys.argv[1:])
    main()
