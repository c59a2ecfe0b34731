"""`model=phi4mm_random`: the full-size Phi-4-multimodal architecture with random weights, for speed and memory
measurements on a GPU without downloading the 11 GB checkpoint.

Its config is the released checkpoint's config.json converted as transformers converts it (apa.checkpoint.layout):
4,743,988,032
parameters (language model 3.836 B with tied embeddings, audio encoder + projector 466 M, vision 442 M), longrope
rotary embeddings, sliding window, relative-bias distance 500 and the real token ids. The speech LoRA at r=320 has
461.4 M parameters.

Written to the cache (like the tiny model): config.json, a tokenizer with the real special-token ids (its BPE part is
the tiny model's; apa.checkpoint.tiny.build_tokenizer), the processor files, and `speech-lora/` with random weights
of the real
shape written as the converter writes it. No base weights: `apa.checkpoint.loading.load_base` builds the model from
config.json directly on the device, in the compute dtype.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from apa.checkpoint.layout import released_config

log = logging.getLogger(__name__)

GENERATOR_VERSION = 2
SPEECH_LORA = {"r": 320, "lora_alpha": 640, "lora_dropout": 0.01}
RANDOM_MARKER = "apa_random_weights"  # in config.json: build from config, there is no weights file


def build_model(config, device: str = "meta", dtype=None):
    """The model with freshly initialised (random) weights, built directly on `device` ("meta": shapes only)."""
    import torch
    from transformers import Phi4MultimodalForCausalLM

    with torch.device(device):
        return Phi4MultimodalForCausalLM._from_config(config, dtype=dtype)


def ensure_random_checkpoint(cache_dir: str | Path | None = None, seed: int = 0) -> Path:
    """The folder of the full-size random checkpoint (config, tokenizer, processor, speech-lora), made on first use."""
    from apa.checkpoint.tiny import TinySpec, generate_once
    from apa.constants import cache_root

    root = Path(cache_dir) if cache_dir else cache_root()
    target = root / f"phi4mm-random-v{GENERATOR_VERSION}-seed{seed}-{TinySpec().fingerprint()}"
    return generate_once(target, lambda out: _write(out, seed),
                         "Writing the full-size random Phi-4-multimodal checkpoint (config + speech-lora) to %s")


def _write(out: Path, seed: int) -> None:
    import torch

    from apa.checkpoint.tiny import build_tokenizer, random_speech_lora, write_processor, write_speech_lora

    config = released_config()
    config.save_pretrained(out)
    config_file = out / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), RANDOM_MARKER: True}, indent=2))
    write_processor(build_tokenizer(2048, real_ids=True), out)
    # the adapter's values drawn on the CPU, seeded, in bf16 (as Microsoft's), shapes from a meta-device model
    write_speech_lora(out, random_speech_lora(build_model(config), SPEECH_LORA, seed, 0.01, torch.bfloat16),
                      SPEECH_LORA)
