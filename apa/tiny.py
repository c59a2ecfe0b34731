"""A tiny Phi-4-multimodal in the native checkpoint layout, generated locally and deterministically.

It lets the real code path (processor, chat template, audio encoder, PEFT, TRL) run on a CPU with no hub access.
Its weights are random: anything it scores means nothing; it proves the pipeline, not the method.

Layout written (the same files a converted Microsoft checkpoint has):
    config.json, generation_config.json, model.safetensors,
    tokenizer.json, tokenizer_config.json, chat_template.jinja, processor_config.json, ...
    speech-lora/adapter_config.json, speech-lora/adapter_model.safetensors
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from apa.constants import (
    ASSISTANT_TOKEN,
    END_TOKEN,
    ENDOFTEXT_TOKEN,
    SPEECH_LORA_TARGET_REGEX,
    USER_TOKEN,
)
from apa.data.records import ARPABET

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1  # bump when the generated files change, so cached copies are rebuilt
PROMPTS_DIR = Path(__file__).resolve().parent.parent / "conf" / "prompts"
IMAGE_TOKEN = "<|image|>"
AUDIO_TOKEN = "<|audio|>"
SYSTEM_TOKEN = "<|system|>"
SPECIAL_TOKENS = [ENDOFTEXT_TOKEN, SYSTEM_TOKEN, USER_TOKEN, ASSISTANT_TOKEN, END_TOKEN, IMAGE_TOKEN, AUDIO_TOKEN]

# Phi-4's chat format: <|role|>content<|end|> per turn, then <|assistant|> to prompt an answer, or end of text
# after a full conversation (that final token is part of what training teaches).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}"
)



# Generic instruction-style English so that prompt texts tokenize into words rather than single bytes. Fixed here
# (not read from the prompt files) so the tiny checkpoint depends only on its spec.
_INSTRUCTION_TEXT = (
    "Listen to the recording of a learner reading the sentence aloud. Rate the pronunciation of the speaker on a "
    "scale from 0 to 10 for each aspect: accuracy, fluency, prosody and an overall total score. Accuracy means the "
    "sounds are correct and clear with no missing or wrong phonemes. Fluency means the speech is smooth without long "
    "pauses, repetitions or stammering. Prosody means the intonation, rhythm, stress and speed are natural and stable. "
    "Answer only with a JSON object with integer values. Transcribe what the speaker actually said: the words, and "
    "the phonemes in ARPAbet symbols separated by spaces, with unk for a sound that cannot be recognised. Give the "
    "word transcript and the phoneme transcript. The score is high when the speech is good and low when it is poor, "
    "hard to understand, incomplete or has many errors"
)


@dataclass
class TinySpec:
    """Sizes of the tiny model. A larger `initializer_range` than the real 0.02 keeps logits from staying flat when
    only LoRA trains (the tied embeddings and norms are frozen), so a short run can overfit a few examples.
    Also the schema of the `model.tiny` config node."""

    seed: int = 0
    vocab_size: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    initializer_range: float = 0.3
    audio_hidden_size: int = 32
    audio_blocks: int = 2
    speech_lora_r: int = 320
    speech_lora_alpha: int = 640
    speech_lora_dropout: float = 0.01
    speech_lora_init_std: float = 0.02  # non-zero B so that "continuing the pretrained adapter" is observable

    def fingerprint(self) -> str:
        blob = json.dumps({"v": GENERATOR_VERSION, "corpus": _tokenizer_corpus(), **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


def default_cache_dir() -> Path:
    return Path(os.environ.get("APA_CACHE_DIR", Path.home() / ".cache" / "apa"))


def ensure_tiny_checkpoint(spec: TinySpec, cache_dir: str | Path | None = None) -> Path:
    """Return the folder of the tiny checkpoint for `spec`, generating it on first use.

    Generation writes into a temporary sibling folder and renames it into place, so concurrent jobs (a multirun,
    several ranks) never see a half-written checkpoint.
    """
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    target = root / f"tiny-phi4mm-{spec.fingerprint()}"
    if (target / "speech-lora" / "adapter_model.safetensors").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=root))
    try:
        log.info("Generating tiny Phi-4-multimodal checkpoint in %s", target)
        _write_checkpoint(spec, tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first; its copy is identical
            if not (target / "speech-lora" / "adapter_model.safetensors").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _tokenizer_corpus() -> list[str]:
    """Deterministic training text for the tiny BPE: the bundled sample's sentences, the prompt files, phones, JSON."""
    from apa.data import SAMPLE_ROOT

    scores = json.loads((SAMPLE_ROOT / "resource" / "scores.json").read_text())
    lines = [entry["text"] for entry in scores.values()]
    lines += [entry["text"].lower() for entry in scores.values()]
    lines += _INSTRUCTION_TEXT.split(". ")
    # The project's prompt files too, so prompts tokenize into words about as compactly as with Phi-4's real
    # 200k-token vocabulary (sequence length drives CPU cost). Their content is part of the fingerprint.
    for prompt_file in sorted(PROMPTS_DIR.glob("*.yaml")) if PROMPTS_DIR.is_dir() else []:
        lines += prompt_file.read_text().splitlines()
    lines += [" ".join(sorted(ARPABET)), "<unk> " * 3, '{"accuracy": 7, "fluency": 8, "prosodic": 6, "total": 7}']
    lines += ['{"word_transcript": "", "phoneme_transcript": ""}', "0 1 2 3 4 5 6 7 8 9 10"]
    return lines * 4


def _build_tokenizer(spec: TinySpec):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    n_special = len(SPECIAL_TOKENS)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        # leave room at the end of the embedding matrix, as the real checkpoint does (200064 rows for ~200k tokens),
        # so control tokens added later need no resize
        vocab_size=spec.vocab_size - n_special - 32,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    tok.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=ENDOFTEXT_TOKEN,
        eos_token=ENDOFTEXT_TOKEN,
        pad_token=ENDOFTEXT_TOKEN,
        unk_token=None,
        extra_special_tokens={"image_token": IMAGE_TOKEN, "audio_token": AUDIO_TOKEN},
        chat_template=CHAT_TEMPLATE,
        model_max_length=131072,
    )


def _write_checkpoint(spec: TinySpec, out: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        GenerationConfig,
        Phi4MultimodalConfig,
        Phi4MultimodalFeatureExtractor,
        Phi4MultimodalForCausalLM,
        Phi4MultimodalProcessor,
    )
    from transformers.image_processing_utils import ImageProcessingMixin

    tokenizer = _build_tokenizer(spec)
    if len(tokenizer) + 4 > spec.vocab_size:
        raise ValueError(f"tiny tokenizer has {len(tokenizer)} tokens; vocab_size {spec.vocab_size} leaves no room")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = Phi4MultimodalConfig(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=4096,
        original_max_position_embeddings=4096,
        initializer_range=spec.initializer_range,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.75},
        bos_token_id=ids[ENDOFTEXT_TOKEN],
        pad_token_id=ids[ENDOFTEXT_TOKEN],
        eos_token_id=[ids[ENDOFTEXT_TOKEN], ids[END_TOKEN]],
        audio_config={
            "hidden_size": spec.audio_hidden_size,
            "num_blocks": spec.audio_blocks,
            "num_attention_heads": 4,
            "intermediate_size": 2 * spec.audio_hidden_size,
            "nemo_conv_channels": 16,
            "bias_max_distance": 50,
            # the defaults (1024) do not follow hidden_size and fail with a channel mismatch
            "ext_pw_out_channel": spec.audio_hidden_size,
            "depthwise_separable_out_channel": spec.audio_hidden_size,
            "audio_token_id": ids[AUDIO_TOKEN],
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 28,
            "patch_size": 14,
            "crop_size": 28,
            "image_token_id": ids[IMAGE_TOKEN],
        },
    )
    torch.manual_seed(spec.seed)
    model = Phi4MultimodalForCausalLM(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ids[ENDOFTEXT_TOKEN],
        eos_token_id=[ids[ENDOFTEXT_TOKEN], ids[END_TOKEN]],
        pad_token_id=ids[ENDOFTEXT_TOKEN],
    )
    model.save_pretrained(out)

    # An audio-only project needs no torchvision: a bare image-processor mixin saves and reloads offline.
    processor = Phi4MultimodalProcessor(
        image_processor=ImageProcessingMixin(),
        audio_processor=Phi4MultimodalFeatureExtractor(),
        tokenizer=tokenizer,
    )
    processor.save_pretrained(out)

    lora = LoraConfig(
        r=spec.speech_lora_r,
        lora_alpha=spec.speech_lora_alpha,
        lora_dropout=spec.speech_lora_dropout,
        target_modules=SPEECH_LORA_TARGET_REGEX,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    gen = torch.Generator().manual_seed(spec.seed + 1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * spec.speech_lora_init_std)
    peft_model.save_pretrained(out / "speech-lora")
    # The adapter must not point at this temporary folder.
    cfg_path = out / "speech-lora" / "adapter_config.json"
    adapter_cfg = json.loads(cfg_path.read_text())
    adapter_cfg["base_model_name_or_path"] = None
    cfg_path.write_text(json.dumps(adapter_cfg, indent=2, sort_keys=True))
