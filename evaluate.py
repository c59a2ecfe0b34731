"""Evaluate a run folder epoch by epoch, the base model, or an existing predictions file (Table 3's metrics).

    python evaluate.py run_dir=outputs/runs/<run>                      final_model
    python evaluate.py run_dir=<run> checkpoint=all                   every epoch + final_model, epochs.md/csv
    python evaluate.py model=tiny data=sample                          the untrained (base) model
    python evaluate.py predictions=<run>/eval/final_model/predictions.jsonl
    torchrun --nproc_per_node=4 evaluate.py run_dir=<run> checkpoint=all    data parallel: the same files, 4 ranks
"""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from apa.command_line import check_command_line
from apa.config import register_configs
from apa.distributed import export_submitit_environment, launch_overrides
from apa.errors import one_line_errors

register_configs(trainer=False)  # the run's trainer settings are only read back, never composed


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@one_line_errors
def main(cfg: DictConfig) -> None:
    from apa.distributed import rank
    from apa.evaluation.evaluate import evaluate
    from apa.reporting.epochs import report_evaluation

    export_submitit_environment()  # RANK etc. inside a multi-task SLURM job, before the ranks join
    hydra_cfg = HydraConfig.get()
    out = Path(hydra_cfg.runtime.output_dir)
    try:
        results = evaluate(cfg, list(hydra_cfg.overrides.task), out)
        if rank() == 0:  # under a data-parallel launch, rank 0 holds the metrics
            table = report_evaluation(results)
            if table:
                print(table)  # the command's one table; the detail is in its log (apa.console)
    finally:  # a refused or re-scoring evaluation leaves no empty folder that Hydra made for it
        for folder in (out, out.parent if cfg.run_dir and out.parent == Path(cfg.run_dir) else None) * (rank() == 0):
            if folder is not None and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


if __name__ == "__main__":
    one_line_errors(check_command_line)(sys.argv[1:])
    sys.argv += one_line_errors(launch_overrides)(sys.argv[1:])  # torchrun: one folder, rank 0's log only
    main()
