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
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from apa.checkpoint.layout import (
    AUDIO_TOKEN,
    IMAGE_TOKEN,
    REAL_IMAGE_PROCESSOR,
    SPECIAL_TOKENS,
    convert_config,
    remote_config,
)
from apa.checkpoint.tokenizer import O200K_PATTERN
from apa.constants import (
    ASSISTANT_TOKEN,
    CONF_DIR,
    END_TOKEN,
    ENDOFTEXT_TOKEN,
    SPEECH_LORA_TARGET_REGEX,
    USER_TOKEN,
    cache_root,
)
from apa.data.records import ARPABET
from apa.errors import UserError

log = logging.getLogger(__name__)

GENERATOR_VERSION = 2  # bump when the generated files change, so cached copies are rebuilt
TOKENIZER_FILES = ("transformers5", "released")  # TinySpec.tokenizer_files
PROMPTS_DIR = CONF_DIR / "prompts"
# The real tokenizer's special tokens, in the real order (by id)
SPECIAL_TOKEN_ORDER = [SPECIAL_TOKENS[i] for i in sorted(SPECIAL_TOKENS)]
SPARE_ROWS = 35  # embedding rows beyond the tokenizer: 200064 rows for 200029 tokens in the real checkpoint
# The vision tower is never used by this project; the tiny one keeps the real class at the smallest size.
TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
               "image_size": 28, "patch_size": 14, "crop_size": 28}

# Phi-4's chat format: <|role|>content<|end|> per turn, then <|assistant|> to prompt an answer, or end of text
# after a full conversation (that final token is part of what training teaches).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}"
)
assert all(t in SPECIAL_TOKEN_ORDER for t in (ASSISTANT_TOKEN, END_TOKEN, ENDOFTEXT_TOKEN, USER_TOKEN))


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
    vocab_size: int = 2048  # upper bound of the BPE vocabulary; the embedding has len(tokenizer) + 35 rows
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
    # How the tokenizer files are written (TOKENIZER_FILES): "transformers5", as transformers 5 saves a tokenizer;
    # "released", as the released checkpoint's most likely are (gpt-4o's Split regex, GPT2Tokenizer named).
    tokenizer_files: str = "transformers5"

    def __post_init__(self) -> None:
        if self.tokenizer_files not in TOKENIZER_FILES:
            raise UserError(f"model.tiny.tokenizer_files={self.tokenizer_files!r}: choose one of "
                            f"{', '.join(TOKENIZER_FILES)}")

    def fingerprint(self) -> str:
        fields = asdict(self)
        if fields["tokenizer_files"] == "transformers5":  # the first miniature keeps the folder name it always had
            del fields["tokenizer_files"]
        else:
            fields["gpt4o_text"] = _GPT4O_TEXT
        blob = json.dumps({"v": GENERATOR_VERSION, "corpus": _tokenizer_corpus(), **fields}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


def ensure_tiny_checkpoint(spec: TinySpec, cache_dir: str | Path | None = None) -> Path:
    """Return the folder of the tiny checkpoint for `spec`, generating it on first use.

    Generation writes into a temporary sibling folder and renames it into place, so concurrent jobs (a multirun,
    several ranks) never see a half-written checkpoint.
    """
    root = Path(cache_dir) if cache_dir else cache_root()
    return generate_once(root / f"tiny-phi4mm-{spec.fingerprint()}", lambda out: _write_checkpoint(spec, out),
                         "Generating tiny Phi-4-multimodal checkpoint in %s")


def generate_once(target: Path, write, message: str) -> Path:
    """`target`, written by `write(folder)` on first use into a temporary sibling folder renamed into place, so that
    concurrent jobs (a multirun, several ranks) never see a half-written checkpoint; complete once its
    speech-lora/ weights exist."""
    done = target / "speech-lora" / "adapter_model.safetensors"
    if done.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        log.info(message, target)
        write(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first; its copy is identical
            if not done.exists():
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


# Text whose gpt-4o pieces differ from GPT-2's: digit runs longer than 3, a punctuation mark before a word, words
# in mixed case. Only the "released" tokenizer learns from it, so that its merges cross GPT-2's piece boundaries
# as the real vocabulary's do, and a GPT-2 pre-tokenizer in place of the file's regex shows.
_GPT4O_TEXT = ["In 2023 and 2024, 1500 learners read 12345 words (about 100 each).", "scores 0 - 10, 9-10, 7-8",
               "23 23 23 23 23 23 23 23 23 23 23 23 23 23 23 23 23 23 23 23 23 23 23 23 23 23 23 23 23 23",
               '"accuracy" (fluency) -prosody /total/ MisPronounced iPhone McDonald\'s 3.14 1,000,000']


def build_tokenizer(rows: int, real_ids: bool = False, pre_tokenizer: str = "byte_level"):
    """A byte-level BPE trained in memory on `_tokenizer_corpus()`, with the real tokenizer's special tokens.

    `pre_tokenizer`: "byte_level" (GPT-2's regex inside ByteLevel, as transformers 5 writes a byte-level BPE) or
    "o200k" (gpt-4o's: a Split of O200K_PATTERN, then ByteLevel without its own regex; trained on more text).

    `rows` bounds the BPE vocabulary (the tiny corpus fills ~1,340 tokens). `real_ids=False` (tiny): the special
    tokens follow the BPE vocabulary in the real order. `real_ids=True` (full-size random): each
    special token sits at its real id (SPECIAL_TOKENS), the ids between the BPE vocabulary and 199999 unused; that
    is what makes `model=phi4mm_random`'s config the real one, token ids included. The tiny model cannot have the
    real ids: a 200064-row tied head makes a CPU training step ~85x slower (5.9 s vs 0.07 s, 8 x 250 tokens).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    corpus = _tokenizer_corpus()
    if pre_tokenizer == "o200k":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(O200K_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        corpus += _GPT4O_TEXT * 4
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=rows - len(SPECIAL_TOKENS) - SPARE_ROWS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    layout = json.loads(tok.to_str())
    base = tok.get_vocab_size()
    for i, (real_id, token) in enumerate(sorted(SPECIAL_TOKENS.items())):
        token_id = real_id if real_ids else base + i
        layout["model"]["vocab"][token] = token_id
        layout["added_tokens"].append({"id": token_id, "content": token, "single_word": False, "lstrip": False,
                                       "rstrip": False, "normalized": False, "special": True})
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(layout)),
        bos_token=ENDOFTEXT_TOKEN,
        eos_token=ENDOFTEXT_TOKEN,
        pad_token=ENDOFTEXT_TOKEN,
        unk_token=None,
        extra_special_tokens={"image_token": IMAGE_TOKEN, "audio_token": AUDIO_TOKEN},  # as the converter sets them
        chat_template=CHAT_TEMPLATE,
        model_max_length=131072,
    )


def write_released_tokenizer_files(tokenizer, out: Path) -> None:
    """Rewrite a saved tokenizer's files as a transformers 4.5x conversion writes a gpt-4o-style tokenizer (what the
    released checkpoint most likely holds): tokenizer.json unchanged; GPT-2's vocab.json and merges.txt beside it;
    special_tokens_map.json, added_tokens.json; tokenizer_config.json naming `GPT2Tokenizer`, its added tokens and
    the chat template inline (no chat_template.jinja)."""
    tokenizer.backend_tokenizer.model.save(str(out))  # vocab.json, merges.txt
    added = {token_id: token.content for token_id, token in tokenizer.added_tokens_decoder.items()}
    special = {"bos_token": ENDOFTEXT_TOKEN, "eos_token": ENDOFTEXT_TOKEN, "pad_token": ENDOFTEXT_TOKEN,
               "unk_token": ENDOFTEXT_TOKEN}
    extra = {"audio_token": AUDIO_TOKEN, "image_token": IMAGE_TOKEN}
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": {str(i): {"content": text, "lstrip": False, "normalized": False, "rstrip": False,
                                          "single_word": False, "special": True} for i, text in sorted(added.items())},
        **special, **extra, "extra_special_tokens": extra,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 131072,
        "processor_class": "Phi4MultimodalProcessor",
        "tokenizer_class": "GPT2Tokenizer",
    }
    files = {"tokenizer_config.json": config, "special_tokens_map.json": special,
             "added_tokens.json": {text: i for i, text in sorted(added.items())}}
    for name, content in files.items():
        (out / name).write_text(json.dumps(content, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    (out / "chat_template.jinja").unlink(missing_ok=True)


def token_roles(tokenizer) -> dict[str, int]:
    """The ids convert_config needs, read from the tokenizer."""
    return {"endoftext": tokenizer.convert_tokens_to_ids(ENDOFTEXT_TOKEN),
            "end": tokenizer.convert_tokens_to_ids(END_TOKEN),
            "audio": tokenizer.audio_token_id, "image": tokenizer.image_token_id}


def tiny_remote_config(spec: TinySpec, ids: dict[str, int], rows: int) -> dict:
    """The released remote-code config.json scaled down: sizes shrink, every other field (longrope and its factor
    lists, cut to the tiny rotary size; sliding window; relative-bias distance; dtype; ...) stays the real one."""
    cfg = remote_config()
    cfg.update(hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
               num_hidden_layers=spec.num_hidden_layers, num_attention_heads=spec.num_attention_heads,
               num_key_value_heads=spec.num_key_value_heads, vocab_size=rows, initializer_range=spec.initializer_range,
               bos_token_id=ids["endoftext"], eos_token_id=ids["endoftext"], pad_token_id=ids["endoftext"])
    cfg["speech_lora"].update(r=spec.speech_lora_r, lora_alpha=spec.speech_lora_alpha, dp=spec.speech_lora_dropout)
    half = int(spec.hidden_size // spec.num_attention_heads * cfg["partial_rotary_factor"]) // 2
    for key in ("short_factor", "long_factor"):
        factors = cfg["rope_scaling"][key]
        cfg["rope_scaling"][key] = factors[:: len(factors) // half][:half]
    audio = cfg["audio_processor"]["config"]
    audio.update(attention_dim=spec.audio_hidden_size, attention_heads=4, linear_units=2 * spec.audio_hidden_size,
                 num_blocks=spec.audio_blocks, depthwise_seperable_out_channel=spec.audio_hidden_size,
                 ext_pw_out_channel=spec.audio_hidden_size)
    audio["nemo_conv_settings"]["conv_channels"] = 16
    cfg["embd_layer"]["image_embd_layer"]["crop_size"] = TINY_VISION["crop_size"]
    return cfg


def random_speech_lora(model, lora_kwargs: dict, seed: int, std: float, dtype=None) -> dict:
    """A speech LoRA of the right shapes with seeded random values, keyed as the remote-code checkpoint keys it
    (`model.layers.0.self_attn.qkv_proj.lora_A.speech.weight`), drawn on the CPU."""
    import torch
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(**lora_kwargs, target_modules=SPEECH_LORA_TARGET_REGEX, task_type="CAUSAL_LM")
    with torch.device("meta"):
        shapes = {name: p.shape for name, p in get_peft_model(model, config).named_parameters() if "lora_" in name}
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in shapes.items():
        key = name.removeprefix("base_model.model.").replace(".default.", ".speech.")
        state[key] = (torch.randn(shape, generator=gen) * std).to(dtype or torch.float32)
    return state


def write_speech_lora(out: Path, remote_state: dict, lora_kwargs: dict) -> None:
    """`speech-lora/` as transformers' converter writes it: every tensor whose key holds "lora" and "speech", with
    "speech." removed from the key (so no PEFT `base_model.model.` prefix), and a plain LoraConfig with the regex."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    adapter = out / "speech-lora"
    LoraConfig(**lora_kwargs, target_modules=SPEECH_LORA_TARGET_REGEX, task_type="CAUSAL_LM").save_pretrained(
        str(adapter))
    converted = {k.replace("speech.", ""): v for k, v in remote_state.items() if "lora" in k and "speech" in k}
    save_file(converted, str(adapter / "adapter_model.safetensors"))


def write_processor(tokenizer, out: Path) -> None:
    """Tokenizer, chat template and processor files; processor_config.json names the real image processor class
    (which imports torchvision: apa.checkpoint.layout.load_processor loads such a folder without it)."""
    from transformers import Phi4MultimodalFeatureExtractor, Phi4MultimodalProcessor
    from transformers.image_processing_utils import ImageProcessingMixin

    processor = Phi4MultimodalProcessor(image_processor=ImageProcessingMixin(),
                                        audio_processor=Phi4MultimodalFeatureExtractor(), tokenizer=tokenizer)
    processor.save_pretrained(out)
    config_file = out / "processor_config.json"
    config = json.loads(config_file.read_text())
    config["image_processor"] = dict(REAL_IMAGE_PROCESSOR)
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _write_checkpoint(spec: TinySpec, out: Path) -> None:
    import torch
    from transformers import GenerationConfig, Phi4MultimodalForCausalLM

    released = spec.tokenizer_files == "released"
    tokenizer = build_tokenizer(spec.vocab_size, pre_tokenizer="o200k" if released else "byte_level")
    ids = token_roles(tokenizer)
    rows = len(tokenizer) + SPARE_ROWS  # as many spare embedding rows as the real checkpoint has
    config = convert_config(tiny_remote_config(spec, ids, rows), ids, vision=TINY_VISION)
    torch.manual_seed(spec.seed)
    model = Phi4MultimodalForCausalLM(config).eval()
    model.generation_config = GenerationConfig(bos_token_id=ids["endoftext"], pad_token_id=ids["endoftext"],
                                               eos_token_id=[ids["endoftext"], ids["end"]])
    model.save_pretrained(out)
    write_processor(tokenizer, out)
    if released:
        write_released_tokenizer_files(tokenizer, out)
    lora = {"r": spec.speech_lora_r, "lora_alpha": spec.speech_lora_alpha, "lora_dropout": spec.speech_lora_dropout}
    # non-zero B, so that "continuing the pretrained adapter" is observable; bf16 as Microsoft's adapter is
    write_speech_lora(out, random_speech_lora(model, lora, spec.seed + 1, spec.speech_lora_init_std, torch.bfloat16),
                      lora)
