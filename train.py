"""Fine-tune Phi-4-multimodal's speech LoRA for pronunciation assessment.

    python train.py experiment=demo lora=pretrained_r320          # tiny model, bundled sample, CPU
    python train.py -m experiment=demo lora=pretrained_r320,paper_r64
    python train.py model=phi4mm data.path=/data/speechocean762 lora=paper_r64
    torchrun --nproc_per_node=4 train.py lora=paper_r64          # data parallel: one run folder, rank 0 writes
"""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from apa.config import register_configs
from apa.distributed import export_submitit_environment, launch_overrides

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    from apa.training import train

    export_submitit_environment()
    train(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    sys.argv += launch_overrides(sys.argv[1:])
    main()
