"""Names shared by the model loader, the tiny-checkpoint generator and the prompts; where the project lies."""

import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_ROOT.parent  # an editable install's checkout: train.py, evaluate.py, conf/
CONF_DIR = REPO_ROOT / "conf"

# Phi-4-multimodal's speech LoRA targets, as a regex on purpose: PEFT full-matches a string, whereas the
# list form ["qkv_proj", "o_proj", ...] would also hit the audio conformer's o_proj/gate_up_proj/down_proj.
SPEECH_LORA_TARGET_REGEX = r"model.layers.\d+.((self_attn.(qkv|o)_proj)|(mlp.(gate_up|down)_proj))"

# Task control tokens prepended to the user turn; added to the tokenizer as special tokens.
APA_TOKEN = "<|APA|>"
MDD_TOKEN = "<|MDD|>"
CONTROL_TOKENS = (APA_TOKEN, MDD_TOKEN)

# Phi-4 chat markers (present in the real tokenizer; the tiny one is generated with the same spellings).
USER_TOKEN = "<|user|>"
ASSISTANT_TOKEN = "<|assistant|>"
END_TOKEN = "<|end|>"
ENDOFTEXT_TOKEN = "<|endoftext|>"

SAMPLING_RATE = 16_000


def cache_root() -> Path:
    """Where generated files are kept (tiny checkpoints, decoded hub audio, cached schema facts): $APA_CACHE_DIR or
    ~/.cache/apa, as an absolute path (a relative one would be recorded in adapter configs and only resolve from the
    folder the run started in), created if missing; one that cannot be a folder is one line naming the variable."""
    from apa.errors import UserError

    given = os.environ.get("APA_CACHE_DIR")
    root = Path(given or Path.home() / ".cache" / "apa").expanduser().absolute()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{'APA_CACHE_DIR=' + given if given else root} cannot be used as the cache folder "
                        f"({e.strerror or e}): set APA_CACHE_DIR to a folder you can write") from e
    return root
