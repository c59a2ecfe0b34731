"""`model=phi4mm_random`: the full-size Phi-4-multimodal architecture with random weights, for speed and memory
measurements on a GPU without downloading the 11 GB checkpoint.

The numbers are the real checkpoint's (docs: ../shared notes; transformers' Phi4MultimodalConfig defaults differ in
heads, tying and rotary fraction): language model 3.836 B (hidden 3072, 32 layers, 24 query / 8 key-value heads,
head_dim 128, MLP 8192, vocab 200064, tied embeddings, partial rotary 0.75), audio encoder + projector 466 M
(24 conformer blocks x 1024), vision 442 M: 4.744 B in all. The speech LoRA at r=320 has 461.4 M parameters.

Written to the cache (like the tiny model): config.json, the tiny model's tokenizer and processor (its token ids are
valid rows of the 200064-row embedding), and `speech-lora/` with random weights of the real shape. No base weights:
`apa.modeling.load_base` builds the model from config.json directly on the device, in the compute dtype.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

from apa.constants import END_TOKEN, ENDOFTEXT_TOKEN, SPEECH_LORA_TARGET_REGEX

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
LANGUAGE_MODEL = {
    "vocab_size": 200064,
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "num_hidden_layers": 32,
    "num_attention_heads": 24,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "original_max_position_embeddings": 4096,
    "tie_word_embeddings": True,
}
SPEECH_LORA = {"r": 320, "lora_alpha": 640, "lora_dropout": 0.01}
RANDOM_MARKER = "apa_random_weights"  # in config.json: build from config, there is no weights file


def full_size_config(token_ids: dict[str, int]):
    """Phi4MultimodalConfig with the real checkpoint's sizes (audio and vision sub-configs are transformers' defaults,
    which match it) and the given special-token ids."""
    from transformers import Phi4MultimodalConfig

    return Phi4MultimodalConfig(
        **LANGUAGE_MODEL,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.75},
        bos_token_id=token_ids[ENDOFTEXT_TOKEN],
        pad_token_id=token_ids[ENDOFTEXT_TOKEN],
        eos_token_id=[token_ids[ENDOFTEXT_TOKEN], token_ids[END_TOKEN]],
        audio_config={"audio_token_id": token_ids["audio"]},
        vision_config={"image_token_id": token_ids["image"]},
    )


def build_model(config, device: str = "meta", dtype=None):
    """The model with freshly initialised (random) weights, built directly on `device` ("meta": shapes only)."""
    import torch
    from transformers import Phi4MultimodalForCausalLM

    with torch.device(device):
        return Phi4MultimodalForCausalLM._from_config(config, dtype=dtype)


def ensure_random_checkpoint(cache_dir: str | Path | None = None, seed: int = 0) -> Path:
    """The folder of the full-size random checkpoint (config, tokenizer, processor, speech-lora), made on first use."""
    from apa.tiny import TinySpec, default_cache_dir, ensure_tiny_checkpoint

    root = Path(cache_dir) if cache_dir else default_cache_dir()
    tiny = ensure_tiny_checkpoint(TinySpec(), root)  # reuse its tokenizer and processor files
    target = root / f"phi4mm-random-v{GENERATOR_VERSION}-seed{seed}-{tiny.name}"
    if (target / "speech-lora" / "adapter_model.safetensors").exists():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=".random-", dir=root))
    try:
        log.info("Writing the full-size random Phi-4-multimodal checkpoint (config + speech-lora) to %s", target)
        _write(tiny, tmp, seed)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first
            if not (target / "speech-lora" / "adapter_model.safetensors").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _write(tiny: Path, out: Path, seed: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    for item in tiny.iterdir():  # tokenizer, processor, chat template; not the tiny weights or config
        if item.is_file() and not item.name.startswith(("model", "config", "generation_config")):
            shutil.copy2(item, out / item.name)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny))
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (ENDOFTEXT_TOKEN, END_TOKEN)}
    ids.update(audio=tokenizer.audio_token_id, image=tokenizer.image_token_id)
    config = full_size_config(ids)
    config.save_pretrained(out)
    config_file = out / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), RANDOM_MARKER: True}, indent=2))

    # the adapter's shapes from a meta-device model; its values drawn on the CPU, seeded, in bf16 (as Microsoft's)
    lora = LoraConfig(**SPEECH_LORA, target_modules=SPEECH_LORA_TARGET_REGEX, task_type="CAUSAL_LM")
    peft_model = get_peft_model(build_model(config), lora)
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, param in peft_model.named_parameters():
        if "lora_" in name:
            key = name.replace(".default", "")
            state[key] = (torch.randn(param.shape, generator=gen) * 0.01).to(torch.bfloat16)
    adapter = out / "speech-lora"
    peft_model.peft_config["default"].save_pretrained(str(adapter))
    save_file(state, adapter / "adapter_model.safetensors")
    cfg_file = adapter / "adapter_config.json"
    cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), "base_model_name_or_path": None}, indent=2))
