"""apa check <folder or hub id> [--revision R] [--adapter speech-lora]

The first command to run with the real weights. It reads the config, the processor files and the speech adapter's
config and tensor names (no weights are loaded or downloaded), runs every check that training and evaluation run
when they load the model, compares the layout with the released checkpoint's (apa.checkpoint.layout), and prints what
it found.

Exit status: 0 no problem, 1 problems (each printed), 2 the checkpoint could not be read at all.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from apa.checkpoint.layout import (
    PROJECTIONS_PER_LAYER,
    REAL_TOKEN_IDS,
    lora_key_report,
    released_config,
    target_module_problems,
    token_problems,
)

# Fields whose value makes the model compute differently: they must be the released checkpoint's.
LAYOUT_FIELDS = ("rope_parameters.rope_type", "rope_parameters.original_max_position_embeddings",
                 "rope_parameters.partial_rotary_factor", "rope_parameters.rope_theta",
                 "original_max_position_embeddings",
                 "max_position_embeddings", "sliding_window", "tie_word_embeddings", "rms_norm_eps", "hidden_act",
                 "audio_config.bias_max_distance", "audio_config.time_reduction", "audio_config.kernel_size",
                 "audio_config.input_size", "audio_config.downsample_rate")
# Fields that only set sizes: a miniature differs here on purpose.
SIZE_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
               "vocab_size", "audio_config.hidden_size", "audio_config.num_blocks")


class Report:
    def __init__(self) -> None:
        self.problems = 0

    def ok(self, text: str) -> None:
        print(f"ok       {text}")

    def note(self, text: str) -> None:
        print(f"note     {text}")

    def problem(self, text: str) -> None:
        self.problems += 1
        print(f"PROBLEM  {text}")


def _get(config, dotted: str):
    value = config
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
    return value


def _local_or_hub(path: str, filename: str, revision: str | None) -> Path | None:
    local = Path(path).expanduser()
    if local.exists():
        candidate = local / filename
        return candidate if candidate.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError

    try:
        return Path(hf_hub_download(path, filename, revision=revision))
    except RemoteEntryNotFoundError:  # the hub answered: the file is not there
        return None
    except LocalEntryNotFoundError as err:  # no answer (offline, HF_HUB_OFFLINE=1) and nothing cached
        raise OSError(f"cannot read {filename} of {path} from the hub or its local cache: check the network or "
                      "HF_HUB_OFFLINE, or pass a local folder (huggingface-cli download … --local-dir <dir>)") from err


def _adapter_tensor_names(path: str, adapter: str, revision: str | None) -> list[str] | None:
    """The tensor names of the adapter file, read from its header only (hub: the safetensors metadata API)."""
    filename = f"{adapter}/adapter_model.safetensors"
    local = Path(path).expanduser()
    if local.exists():
        if not (local / filename).is_file():
            return None
        from safetensors import safe_open

        with safe_open(str(local / filename), "pt") as f:
            return list(f.keys())
    from huggingface_hub import get_safetensors_metadata

    files = get_safetensors_metadata(path, revision=revision).files_metadata
    return list(files[filename].tensors) if filename in files else None


def check(path: str, revision: str | None, adapter: str, report: Report) -> None:
    import torch
    from transformers import AutoConfig, Phi4MultimodalForCausalLM

    from apa.checkpoint.layout import load_processor
    from apa.checkpoint.loading import CONVERT_HINT

    local = Path(path).expanduser()
    if not local.exists() and (path.startswith(("/", ".", "~")) or path.count("/") != 1):
        raise FileNotFoundError(f"{path} does not exist (neither a folder nor a hub id). {CONVERT_HINT}")
    config_file = _local_or_hub(path, "config.json", revision)
    if config_file is None:
        raise FileNotFoundError(f"{path} has no config.json, so it is not a model checkpoint. {CONVERT_HINT}")
    raw = json.loads(config_file.read_text())
    if "speech_lora" in raw or "auto_map" in raw or raw.get("model_type") != "phi4_multimodal":
        report.problem(f"not a native Phi-4-multimodal checkpoint (model_type={raw.get('model_type')}, "
                       f"{'auto_map ' if 'auto_map' in raw else ''}{'speech_lora' if 'speech_lora' in raw else ''}: "
                       f"the trust_remote_code format). {CONVERT_HINT}")
        return
    config = AutoConfig.from_pretrained(path, revision=revision)
    report.ok(f"native format: {type(config).__name__} (model_type phi4_multimodal, no remote code)")

    released = released_config()
    differing = [f"{f}={_get(config, f)!r} (released: {_get(released, f)!r})" for f in LAYOUT_FIELDS
                 if _get(config, f) != _get(released, f)]
    rope = config.rope_parameters or {}
    rotary_half = int(config.hidden_size // config.num_attention_heads * rope.get("partial_rotary_factor", 1.0)) // 2
    for key in ("short_factor", "long_factor"):
        if rope.get("rope_type") == "longrope" and len(rope.get(key) or []) != rotary_half:
            differing.append(f"rope_parameters.{key} has {len(rope.get(key) or [])} values, the rotary size needs "
                             f"{rotary_half}")
    for item in differing:
        report.problem(f"config differs from the released checkpoint: {item}")
    if not differing:
        report.ok("layout as released: longrope rotary embedding (original 4096 positions), sliding window "
                  f"{config.sliding_window}, tied embeddings, audio relative-bias distance "
                  f"{config.audio_config.bias_max_distance}")
    sizes = {f: (_get(config, f), _get(released, f)) for f in SIZE_FIELDS}
    if all(mine == real for mine, real in sizes.values()):
        report.ok(f"sizes as released: hidden {config.hidden_size}, {config.num_hidden_layers} layers, vocabulary "
                  f"{config.vocab_size}, {config.audio_config.num_blocks} conformer blocks")
    else:
        report.note("sizes differ from the released checkpoint (a miniature?): " + ", ".join(
            f"{f} {mine} (released {real})" for f, (mine, real) in sizes.items() if mine != real))

    try:
        processor = load_processor(path, revision)
    except (OSError, ValueError) as err:
        report.problem(f"the processor does not load: {err}")
        return
    processor_file = _local_or_hub(path, "processor_config.json", revision)
    named = "not named"
    if processor_file is not None:
        named = json.loads(processor_file.read_text()).get("image_processor", {}).get("image_processor_type", named)
    report.ok(f"processor: {type(processor).__name__} from {type(processor.tokenizer).__name__} and "
              f"{type(processor.audio_processor).__name__}; the image processor the files name ({named}) is not "
              "loaded (it imports torchvision; this project is audio-only)")

    tokenizer = processor.tokenizer
    problems = token_problems(config, tokenizer)
    for problem in problems:
        report.problem(problem)
    if not problems:
        report.ok(f"token ids agree: audio {tokenizer.audio_token}={tokenizer.audio_token_id}, image "
                  f"{tokenizer.image_token}={tokenizer.image_token_id} in tokenizer and config; <|user|>, "
                  "<|assistant|>, <|end|> present; <|end|> ends generation")
    if config.vocab_size == released.vocab_size and tokenizer.audio_token_id != REAL_TOKEN_IDS["audio"]:
        report.problem(f"full-size vocabulary but the audio token id is {tokenizer.audio_token_id}, "
                       f"not the released {REAL_TOKEN_IDS['audio']}")
    highest = max(tokenizer.get_vocab().values())
    spare = config.vocab_size - highest - 1
    if spare >= 2:
        report.ok(f"{spare} spare embedding rows: <|APA|> and <|MDD|> fit without resizing")
    else:
        report.note(f"{spare} spare embedding rows: the embeddings will be resized for <|APA|> and <|MDD|> (logged)")

    adapter_config_file = _local_or_hub(path, f"{adapter}/adapter_config.json", revision)
    if adapter_config_file is None:
        report.problem(f"no {adapter}/adapter_config.json: lora=pretrained_r320 and the untrained baseline need the "
                       "checkpoint's speech adapter")
        return
    from peft import LoraConfig

    adapter_cfg = json.loads(adapter_config_file.read_text())
    lora = LoraConfig(target_modules=adapter_cfg.get("target_modules"), r=adapter_cfg.get("r", 8))
    with torch.device("meta"):
        names = [name for name, _ in Phi4MultimodalForCausalLM(config).named_modules()]
    layers = config.num_hidden_layers
    problems = target_module_problems(lora, names, layers)
    for problem in problems:
        report.problem(f"{adapter}: {problem}")
    shape = (adapter_cfg.get("r"), adapter_cfg.get("lora_alpha"), adapter_cfg.get("lora_dropout"))
    if not problems:
        report.ok(f"{adapter}: r={shape[0]}, alpha={shape[1]}, dropout={shape[2]} on exactly the "
                  f"{PROJECTIONS_PER_LAYER * layers} language-model projections (regex target_modules)")
    if shape != (320, 640, 0.01):
        report.note(f"{adapter}: r/alpha/dropout {shape} differ from the released (320, 640, 0.01) that "
                    "lora=pretrained_r320 expects; set lora.r/alpha/dropout to match")
    keys = _adapter_tensor_names(path, adapter, revision)
    if keys is None:
        report.problem(f"no {adapter}/adapter_model.safetensors")
        return
    formats, problems = lora_key_report(keys, layers)
    for problem in problems:
        report.problem(f"{adapter}/adapter_model.safetensors: {problem}")
    if not problems:
        report.ok(f"{adapter}/adapter_model.safetensors: {len(keys)} LoRA tensors, keys in the "
                  f"{'/'.join(sorted(formats))} spelling, every projection covered (the loader accepts PEFT, "
                  "converter and remote-code spellings and checks every tensor after loading)")
    report.note("attention: the audio encoder runs on sdpa whatever model.attn_implementation asks (flash-attention "
                "cannot take its relative-position bias mask)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("path", help="a local checkpoint folder or a hub id")
    parser.add_argument("--revision", default=None, help="hub branch, tag or commit (e.g. refs/pr/70)")
    parser.add_argument("--adapter", default="speech-lora", help="the speech adapter's subfolder")
    args = parser.parse_args(argv)
    import logging

    logging.disable(logging.WARNING)  # transformers' load-time chatter; every finding is printed below
    print(f"checking {args.path}" + (f" at revision {args.revision}" if args.revision else ""))
    report = Report()
    try:
        check(args.path, args.revision, args.adapter, report)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        logging.disable(logging.NOTSET)  # called in process (apa check, tests): leave logging as it was
    print("no problems found" if not report.problems else f"{report.problems} problem(s) found")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
