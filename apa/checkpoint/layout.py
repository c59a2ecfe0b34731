"""The released Phi-4-multimodal-instruct checkpoint's layout, as code can observe it, and the checks that hold a
checkpoint to it.

Nothing here downloads weights. The facts come from public sources (PROVENANCE.txt beside this file):

- `REMOTE_CONFIG`: the released remote-code config.json; `convert_config` turns it (or a scaled-down copy of it) into
  the native `Phi4MultimodalConfig` following the mapping of transformers' `convert_phi4_multimodal_weights_to_hf.py`.
  The tiny checkpoint (apa.checkpoint.tiny) and the full-size random one (apa.checkpoint.full_size) are both made
  this way.
- `SPECIAL_TOKENS`: the converted tokenizer's markers and their ids.
- Adapter keys: the three spellings a speech LoRA is found in (PEFT's, the converter's, the remote code's) and
  their normal form; `target_module_problems` refuses an adapter config that would wrap more than the language
  model's 4 projections per layer.
- `load_processor`: the processor from its tokenizer and audio feature extractor, without importing the image
  processor (the real one, `Phi4MultimodalImageProcessorFast`, needs torchvision; this project is audio-only).
- `token_problems`: tokenizer and config agree on the audio and image token ids; the chat markers exist.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from pathlib import Path

from apa.console import verbose
from apa.constants import SPEECH_LORA_TARGET_REGEX

REMOTE_CONFIG_FILE = Path(__file__).with_name("phi4mm_remote_config.json")

# The converted tokenizer's special tokens (id: spelling). 199999, 200010, 200011, 200020: transformers' converter
# and integration tests; 200019, 200021, 200022: Phi-4's chat markers (the same base tokenizer as Phi-4-mini).
SPECIAL_TOKENS = {
    199999: "<|endoftext|>",
    200010: "<|endoftext10|>",  # image placeholder (`<|image_1|>` in the remote-code prompts)
    200011: "<|endoftext11|>",  # audio placeholder (`<|audio_1|>` in the remote-code prompts)
    200019: "<|assistant|>",
    200020: "<|end|>",
    200021: "<|user|>",
    200022: "<|system|>",
}
IMAGE_TOKEN = SPECIAL_TOKENS[200010]
AUDIO_TOKEN = SPECIAL_TOKENS[200011]
CHAT_MARKERS = ("<|user|>", "<|assistant|>", "<|end|>")
# What the released config and the converter give as token ids (role -> id).
REAL_TOKEN_IDS = {"endoftext": 199999, "image": 200010, "audio": 200011, "end": 200020}

# The real image processor's settings (transformers' Phi4MultimodalImageProcessor defaults), written into the
# miniatures' processor_config.json so that they name the same class the real checkpoint does.
REAL_IMAGE_PROCESSOR = {
    "image_processor_type": "Phi4MultimodalImageProcessorFast",
    "size": {"height": 448, "width": 448},
    "patch_size": 14,
    "dynamic_hd": 36,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "do_convert_rgb": True,
    "resample": 3,
}

# The speech LoRA's targets: the language model's attention and MLP projections, 4 per decoder layer.
PROJECTIONS_PER_LAYER = 4


def remote_config() -> dict:
    """A fresh copy of the released remote-code config.json."""
    return json.loads(REMOTE_CONFIG_FILE.read_text())


# ---------------------------------------------------------------------------------------------------------------
# Config conversion (remote code -> native transformers)
# ---------------------------------------------------------------------------------------------------------------

# What transformers' converter removes or renames; everything else passes through to Phi4MultimodalConfig.
_DROPPED = ("_name_or_path", "architectures", "auto_map", "speech_lora", "vision_lora", "transformers_version",
            "_attn_implementation")
_AUDIO_DROPPED = ("activation_checkpointing", "cnn_layer_norm", "input_layer", "batch_norm",
                  "encoder_embedding_config", "ext_pw_kernel_size", "bias_in_glu", "causal")
_AUDIO_RENAMED = {
    "attention_dim": "hidden_size",
    "attention_heads": "num_attention_heads",
    "linear_units": "intermediate_size",
    # The converter passes the remote code's misspelling through, where the native config ignores it and falls back
    # to its default (1024, the released value). Renamed here so that a scaled-down config keeps its own value.
    "depthwise_seperable_out_channel": "depthwise_separable_out_channel",
}


def convert_config(remote: dict, token_ids: dict[str, int] | None = None, vision: dict | None = None):
    """The native Phi4MultimodalConfig of a remote-code config.json (transformers' converter's mapping).

    `token_ids` (roles as in REAL_TOKEN_IDS) default to the real ones: the converter sets eos to
    [<|endoftext|>, <|end|>] and leaves the audio/image ids at the native defaults, which are the real ones.
    `vision` overrides native vision-config fields (only the miniatures shrink the unused vision tower).
    """
    from transformers import Phi4MultimodalAudioConfig, Phi4MultimodalConfig, Phi4MultimodalVisionConfig

    ids = {**REAL_TOKEN_IDS, **(token_ids or {})}
    cfg = copy.deepcopy(remote)
    for key in _DROPPED:
        cfg.pop(key, None)
    embd = cfg.pop("embd_layer")
    audio = cfg.pop("audio_processor")["config"]
    for key in _AUDIO_DROPPED:
        audio.pop(key, None)
    for old, new in _AUDIO_RENAMED.items():
        audio[new] = audio.pop(old)
    audio["nemo_conv_channels"] = audio.pop("nemo_conv_settings")["conv_channels"]
    audio["bias_max_distance"] = audio.pop("relative_attention_bias_args")["t5_bias_max_distance"]
    audio["downsample_rate"] = embd["audio_embd_layer"]["downsample_rate"]
    audio["audio_token_id"] = ids["audio"]
    vision_cfg = {"crop_size": embd["image_embd_layer"]["crop_size"], "image_token_id": ids["image"], **(vision or {})}
    cfg["eos_token_id"] = [ids["endoftext"], ids["end"]]
    return Phi4MultimodalConfig(**cfg, audio_config=Phi4MultimodalAudioConfig(**audio),
                                vision_config=Phi4MultimodalVisionConfig(**vision_cfg))


def released_config():
    """The native config of the released checkpoint: what a converted full-size checkpoint holds."""
    return convert_config(remote_config())


# Known and harmless: transformers warns (once per process, `logger.warning_once`) that this checkpoint's longrope
# `rope_parameters` carry `original_max_position_embeddings` (4096) but no `factor`
# (modeling_rope_utils._validate_longrope_rope_parameters). The released config is written that way, as Phi-3's
# are, and transformers' own converter keeps it so. The warning only recommends storing the ratio as `factor`: with
# none stored, transformers computes it as max_position_embeddings / original_max_position_embeddings (131072 / 4096
# = 32) and the attention scaling from it, sqrt(1 + ln 32 / ln 4096) = 1.19 (_compute_longrope_parameters), which
# is what the released remote code computes. A user can do nothing about it, so it is dropped at its logger, this
# message only; APA_VERBOSE=1 or hydra.verbose=true let it through (apa.console).
ROPE_LOGGER = "transformers.modeling_rope_utils"
ROPE_FACTOR_WARNING = "This model config has set a `rope_parameters['original_max_position_embeddings']` field"


class KnownRopeWarning(logging.Filter):
    """Drops transformers' longrope `factor` advice (above) unless the console is verbose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(ROPE_FACTOR_WARNING) or verbose(record.name)


def silence_known_warnings() -> None:
    """Install KnownRopeWarning on transformers' RoPE logger (once; apa.checkpoint does on import)."""
    logger = logging.getLogger(ROPE_LOGGER)
    if not any(isinstance(f, KnownRopeWarning) for f in logger.filters):
        logger.addFilter(KnownRopeWarning())


# ---------------------------------------------------------------------------------------------------------------
# Processor
# ---------------------------------------------------------------------------------------------------------------


def load_processor(path: str, revision: str | None = None):
    """The checkpoint's processor without torchvision (apa.checkpoint.processor.AudioOnlyProcessor): built from its
    tokenizer and audio feature extractor; saving it writes the checkpoint's own processor files back unchanged."""
    from apa.checkpoint.processor import load_processor as load

    return load(path, revision)


# ---------------------------------------------------------------------------------------------------------------
# Checks (each returns a list of problems, empty when all is well)
# ---------------------------------------------------------------------------------------------------------------


# Fields whose value makes the model compute differently: they must be the released checkpoint's.
LAYOUT_FIELDS = ("rope_parameters.rope_type", "rope_parameters.original_max_position_embeddings",
                 "rope_parameters.partial_rotary_factor", "rope_parameters.rope_theta",
                 "original_max_position_embeddings",
                 "max_position_embeddings", "sliding_window", "tie_word_embeddings", "rms_norm_eps", "hidden_act",
                 "audio_config.bias_max_distance", "audio_config.time_reduction", "audio_config.kernel_size",
                 "audio_config.input_size", "audio_config.downsample_rate")


def dotted(config, name: str):
    """`config`'s value at a dotted field name (attributes or dict keys)."""
    value = config
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
    return value


def native_format_problem(raw: dict) -> str | None:
    """What makes a config.json (as read from the file) the remote-code format rather than the native one."""
    if "speech_lora" in raw or "auto_map" in raw or raw.get("model_type") != "phi4_multimodal":
        markers = [k for k in ("speech_lora", "auto_map") if k in raw]
        found = ", ".join(markers) or f"model_type={raw.get('model_type')}"
        return f"not a native Phi-4-multimodal checkpoint (found {found}: the trust_remote_code format)"
    return None


def layout_problems(config) -> list[str]:
    """The fields that change what the model computes must be the released checkpoint's (sizes may differ)."""
    released = released_config()
    problems = [f"config differs from the released checkpoint: {f}={dotted(config, f)!r} "
                f"(released: {dotted(released, f)!r})" for f in LAYOUT_FIELDS
                if dotted(config, f) != dotted(released, f)]
    rope = config.rope_parameters or {}
    rotary_half = int(config.hidden_size // config.num_attention_heads * rope.get("partial_rotary_factor", 1.0)) // 2
    for key in ("short_factor", "long_factor"):
        if rope.get("rope_type") == "longrope" and len(rope.get(key) or []) != rotary_half:
            problems.append(f"config differs from the released checkpoint: rope_parameters.{key} has "
                            f"{len(rope.get(key) or [])} values, the rotary size needs {rotary_half}")
    return problems


def chat_template_problems(tokenizer) -> list[str]:
    """The chat template must render the project's conversation exactly as Phi-4 was trained on it (no system
    turn added, no other markers): the prompt `<|user|>…<|end|><|assistant|>`, the answer `…<|end|><|endoftext|>`."""
    from apa.constants import ASSISTANT_TOKEN, END_TOKEN, USER_TOKEN

    if not tokenizer.chat_template:
        return ["the tokenizer has no chat template (tokenizer_config.json or chat_template.jinja)"]
    user, answer = "X", "Y"
    prompt = f"{USER_TOKEN}{user}{END_TOKEN}{ASSISTANT_TOKEN}"
    expected = {True: prompt, False: f"{prompt}{answer}{END_TOKEN}{tokenizer.eos_token}"}
    problems = []
    for open_prompt, want in expected.items():
        messages = [{"role": "user", "content": user}] + ([] if open_prompt else [{"role": "assistant",
                                                                                    "content": answer}])
        got = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=open_prompt)
        if got != want:
            problems.append(f"the chat template renders {got!r} where the project's prompt is {want!r}")
    return problems


def feature_extractor_problems(config, feature_extractor) -> list[str]:
    """The audio feature extractor must make what the audio encoder reads: 16 kHz audio, `input_size` mel bins, and
    the compression (`time_reduction`) and downsample rates the encoder and the audio token count assume."""
    from apa.constants import SAMPLING_RATE

    audio = config.audio_config
    pairs = (("sampling_rate", SAMPLING_RATE, "the project's audio rate"),
             ("feature_size", audio.input_size, "audio_config.input_size"),
             ("audio_compression_rate", audio.time_reduction, "audio_config.time_reduction"),
             ("audio_downsample_rate", audio.downsample_rate, "audio_config.downsample_rate"))
    return [f"the audio feature extractor has {name}={getattr(feature_extractor, name, None)} but "
            f"{source} is {expected}" for name, expected, source in pairs
            if getattr(feature_extractor, name, None) != expected]


def lora_shape_problems(shapes: dict, r: int) -> list[str]:
    """{tensor name: shape} of an adapter file against its config's rank: lora_A is (r, in), lora_B is (out, r)."""
    wrong = []
    for key, shape in shapes.items():
        found = normalise_lora_key(key)
        if found is None or len(shape) != 2:
            continue
        rank = shape[0] if ".lora_A." in found[0] else shape[1]
        if rank != r:
            wrong.append((key, tuple(shape), rank))
    if not wrong:
        return []
    key, shape, rank = wrong[0]
    return [f"{len(wrong)} LoRA tensor(s) have rank {rank}, not the adapter config's r={r}, e.g. {key} {shape}: "
            "the adapter config and weights do not belong together"]


def loaded_weight_problems(model, loading_info: dict) -> list[str]:
    """After loading: every weight the model has came from the files and every tensor of the files was used
    (transformers only warns, and a missing weight then trains from random init), and the LM head is tied to the
    embeddings exactly when the config says so."""
    problems = []
    for kind, what in (("missing_keys", "missing from the weight files (it would start from random values)"),
                       ("unexpected_keys", "in the weight files but not in the model (left unused)"),
                       ("mismatched_keys", "of another shape in the weight files than in the model")):
        keys = sorted(str(k[0] if isinstance(k, tuple) else k) for k in loading_info.get(kind) or [])
        if keys:
            problems.append(f"{len(keys)} weight(s) {what}, e.g. {keys[0]}")
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    declared = bool(model.config.get_text_config().tie_word_embeddings)
    if tied != declared:
        problems.append(f"the LM head is {'tied to' if tied else 'separate from'} the embeddings but the config says "
                        f"tie_word_embeddings={declared}")
    return problems


def token_problems(config, tokenizer) -> list[str]:
    """The model encodes audio only where input_ids hold config.audio_config.audio_token_id: a tokenizer whose audio
    token has another id would make it skip the audio without a word. Same for images; chat markers must exist."""
    problems = []
    for role, sub in (("audio", config.audio_config), ("image", config.vision_config)):
        token = getattr(tokenizer, f"{role}_token", None)
        expected = getattr(sub, f"{role}_token_id")
        if token is None:
            problems.append(f"the tokenizer names no {role} token (extra_special_tokens.{role}_token)")
            continue
        actual = tokenizer.convert_tokens_to_ids(token)
        if actual != expected:
            problems.append(f"{role} token {token} has id {actual} in the tokenizer but config.{role}_config."
                            f"{role}_token_id is {expected}: the model would ignore the {role}")
    vocab = tokenizer.get_vocab()
    missing = [m for m in CHAT_MARKERS if m not in vocab]
    if missing:
        problems.append(f"the tokenizer lacks the chat marker(s) {', '.join(missing)}")
    elif tokenizer.convert_tokens_to_ids("<|end|>") not in _as_list(config.eos_token_id):
        problems.append("<|end|> is not among config.eos_token_id: generation would not stop after the answer")
    return problems


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def expected_lora_modules(num_hidden_layers: int) -> set[str]:
    return {f"model.layers.{i}.{p}" for i in range(num_hidden_layers)
            for p in ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")}


def target_module_problems(lora_config, module_names, num_hidden_layers: int) -> list[str]:
    """The modules `lora_config` would wrap must be exactly the language model's projections. The list form
    ["qkv_proj", "o_proj", ...] also hits the audio conformer's o_proj/gate_up_proj/down_proj."""
    from peft.tuners.tuners_utils import check_target_module_exists

    wrapped = {name for name in module_names if check_target_module_exists(lora_config, name)}
    expected = expected_lora_modules(num_hidden_layers)
    problems = []
    extra, missing = sorted(wrapped - expected), sorted(expected - wrapped)
    if extra:
        problems.append(f"target_modules={lora_config.target_modules!r} would also put LoRA on {len(extra)} module(s) "
                        f"outside the language model's projections, e.g. {extra[0]}; use the regex "
                        f"{SPEECH_LORA_TARGET_REGEX!r} (a string) instead")
    if missing:
        problems.append(f"target_modules={lora_config.target_modules!r} misses {len(missing)} of the "
                        f"{len(expected)} language-model projections, e.g. {missing[0]}")
    return problems


# ---------------------------------------------------------------------------------------------------------------
# Adapter keys
# ---------------------------------------------------------------------------------------------------------------

# base_model.model.<module>.lora_A.weight   PEFT's save_pretrained
# <module>.lora_A.weight                    transformers' converter (speech-lora/ of the native checkpoint)
# <module>.lora_A.speech.weight             the remote-code checkpoint's own state dict
_LORA_KEY = re.compile(r"(?P<peft>base_model\.model\.)?(?P<module>.+)\.(?P<ab>lora_[AB])(?P<name>\.[^.]+)?\.weight")


def normalise_lora_key(key: str) -> tuple[str, str] | None:
    """(PEFT state-dict key, format) of a LoRA tensor key in any of the three spellings; None if not a LoRA key."""
    match = _LORA_KEY.fullmatch(key)
    if match is None:
        return None
    fmt = "peft" if match["peft"] else ("remote-code" if match["name"] else "converter")
    return f"base_model.model.{match['module']}.{match['ab']}.weight", fmt


def lora_key_report(keys, num_hidden_layers: int) -> tuple[set[str], list[str]]:
    """(formats found, problems) for the tensor names of an adapter file against the modules it must cover."""
    expected = {f"base_model.model.{m}.{ab}.weight" for m in expected_lora_modules(num_hidden_layers)
                for ab in ("lora_A", "lora_B")}
    normal, formats, foreign = set(), set(), []
    for key in keys:
        found = normalise_lora_key(key)
        if found is None:
            foreign.append(key)
            continue
        normal.add(found[0])
        formats.add(found[1])
    problems = []
    if foreign:
        problems.append(f"{len(foreign)} tensor(s) are not LoRA weights, e.g. {foreign[0]}")
    if len(formats) > 1:
        problems.append(f"the keys mix spellings ({', '.join(sorted(formats))})")
    missing, extra = sorted(expected - normal), sorted(normal - expected)
    if missing:
        problems.append(f"{len(missing)} of the {len(expected)} LoRA tensors are missing, e.g. {missing[0]}")
    if extra:
        problems.append(f"{len(extra)} LoRA tensor(s) target modules outside the language model's projections, "
                        f"e.g. {extra[0]}")
    return formats, problems
