"""Models for inference: the base checkpoint with a trained adapter (loaded fresh, or swapped on one base model
between a run's checkpoints), and the untrained baseline as the paper ran it."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def put_adapter(base, adapter_dir: Path):
    """`PeftModel.from_pretrained(base, adapter_dir)`, with the adapter's weights checked: an adapter_config.json
    that does not fit its weights (an edited rank) or a NaN or infinite weight (a training that diverged) is one line
    naming the folder, never a 50-line size-mismatch traceback or a model that answers nonsense. The check reads the
    adapter's tensors as loaded (no second read of the file)."""
    import torch
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict

    from apa.errors import UserError

    try:
        model = PeftModel.from_pretrained(base, str(adapter_dir))
    except RuntimeError as e:
        if "size mismatch" not in str(e):
            raise
        first = next((line.strip() for line in str(e).splitlines() if "size mismatch" in line), "")[:200]
        raise UserError(f"{adapter_dir}/adapter_config.json does not fit its weights ({first}): it was edited or "
                        "comes from another run. Restore it from the run that wrote the weights") from e
    bad = next((k for k, v in get_peft_model_state_dict(model).items()
                if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise UserError(f"{adapter_dir} holds NaN or infinite weights ({bad}, among others): the training that wrote "
                        "it diverged. Use an earlier checkpoint, or train again with a lower trainer.learning_rate")
    return model


def load_for_eval(model_cfg, adapter_dir: Path):
    """Base model + a trained adapter with its tokenizer/processor, on the GPU when there is one, in eval mode."""
    import torch

    from apa.checkpoint.layout import load_processor
    from apa.checkpoint.loading import load_base

    model, _, _ = load_base(model_cfg)
    processor = load_processor(str(adapter_dir))
    model = put_adapter(model, adapter_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval(), processor


class EvalModels:
    """The models of one run's checkpoints, in turn, on the GPU when there is one, in eval mode.

    The base model is loaded once. For the next checkpoint the adapter is taken off (PEFT `unload`: every LoRA layer,
    every `modules_to_save` copy (model.unfreeze) and the control-token rows go back to the untouched base modules;
    nothing is merged) and the next checkpoint's adapter is put on with the same `PeftModel.from_pretrained` a fresh
    load uses, so each checkpoint gets exactly the model a fresh load gives (tested logit for logit, with
    model.unfreeze too). Should a module of PEFT's survive the unload, the base model is loaded again instead."""

    def __init__(self, model_cfg):
        self.model_cfg = model_cfg
        self.model = None
        self.base_loads = 0

    def load(self, adapter_dir: Path):
        import torch

        from apa.checkpoint.layout import load_processor

        base = None if self.model is None else _unloaded(self.model)
        self.model = None
        if base is None:
            _free_memory()
            return self._fresh(adapter_dir)
        _free_memory()
        processor = load_processor(str(adapter_dir))
        self.model = put_adapter(base, adapter_dir)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = self.model.to(device).eval()
        return self.model, processor

    def _fresh(self, adapter_dir: Path):
        self.model, processor = load_for_eval(self.model_cfg, adapter_dir)
        self.base_loads += 1
        return self.model, processor


def _unloaded(model):
    """The base model under `model` with every PEFT module removed, or None (logged) if any remains."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    base = model.unload()
    left = [name for name, module in base.named_modules()
            if isinstance(module, (BaseTunerLayer, AuxiliaryTrainingWrapper))]
    if left:
        log.warning("the adapter did not come off cleanly (%s); loading the base model again", left[0])
        return None
    return base


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load_baseline(model_cfg, baseline, seed: int):
    """The untrained model as the paper's "no training" row ran it: with the checkpoint's own speech LoRA (loaded and
    checked like lora=pretrained_r320's) unless baseline.speech_lora=false, control tokens only if asked for."""
    import torch
    from peft import PeftConfig

    from apa.checkpoint.loading import adapter_folder, add_control_tokens, load_base, load_speech_adapter

    model, processor, path = load_base(model_cfg)
    if baseline.control_tokens:
        add_control_tokens(model, processor, seed)
    if baseline.speech_lora:
        adapter_dir = adapter_folder(path, "speech-lora", model_cfg.get("revision"))
        model = load_speech_adapter(model, PeftConfig.from_pretrained(adapter_dir), adapter_dir)
    else:
        log.warning("baseline.speech_lora=false: the native model without its speech adapter does not use audio "
                    "meaningfully (transformers' own integration test expects a refusal to listen)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval(), processor, path
