"""Evaluate a run folder epoch by epoch, the base model, or an existing predictions file (Table 3's metrics).

    python evaluate.py run_dir=outputs/runs/<run>                      final_model
    python evaluate.py run_dir=<run> checkpoint=all                   every epoch + final_model, epochs.md/csv
    python evaluate.py model=tiny data=sample                          the untrained (base) model
    python evaluate.py predictions=<run>/eval/final_model/predictions.jsonl
"""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from apa.config import register_configs
from apa.errors import one_line_errors

register_configs(trainer=False)  # the run's trainer settings are only read back, never composed


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@one_line_errors
def main(cfg: DictConfig) -> None:
    from apa.evaluation.evaluate import evaluate
    from apa.reporting.epochs import report_evaluation

    hydra_cfg = HydraConfig.get()
    out = Path(hydra_cfg.runtime.output_dir)
    try:
        report_evaluation(evaluate(cfg, list(hydra_cfg.overrides.task), out))
    finally:  # a refused or re-scoring evaluation leaves no empty folder that Hydra made for it
        for folder in (out, out.parent if cfg.run_dir and out.parent == Path(cfg.run_dir) else None):
            if folder is not None and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


if __name__ == "__main__":
    main()
