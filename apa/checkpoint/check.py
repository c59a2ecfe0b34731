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
    chat_template_problems,
    dotted,
    feature_extractor_problems,
    layout_problems,
    lora_key_report,
    lora_shape_problems,
    native_format_problem,
    released_config,
    target_module_problems,
    token_problems,
)
from apa.errors import UserError

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
        from apa.offline import download_hint

        raise OSError(f"cannot read {filename} of {path} from the hub or its local cache: check the network or "
                      f"HF_HUB_OFFLINE, or pass a local folder (`{download_hint(path, revision)}`)") from err


def _header(file: Path) -> dict[str, list[int]]:
    """{tensor name: shape} from a safetensors file's header (no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    from apa.checkpoint.loading import ModelLoadError, damaged_weights

    try:
        with safe_open(str(file), "pt") as f:
            return {key: list(f.get_slice(key).get_shape()) for key in f.keys()}
    except SafetensorError as e:
        raise ModelLoadError(damaged_weights(file, e)) from e


def _cached_file(path: str, filename: str, revision: str | None, err: Exception) -> Path:
    """A hub id's file at `revision` from the local hub cache, when the hub cannot be asked (offline, no network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(path, filename, revision=revision)
    if not isinstance(found, str):
        from apa.offline import download_hint

        raise OSError(f"{filename} of {path} at revision {revision} is not in the local hub cache and the hub cannot "
                      f"be asked ({type(err).__name__}): connect, or pass a local folder "
                      f"(`{download_hint(path, revision)}`)") from err
    return Path(found)


def _tensor_shapes(path: str, filename: str, revision: str | None) -> dict[str, list[int]] | None:
    """{tensor name: shape} of one safetensors file, read from its header only (a hub id: the file's own header
    through the hub's metadata API, at `revision`; offline, the cached file's); None when the file is not there."""
    local = Path(path).expanduser()
    if local.exists():
        return _header(local / filename) if (local / filename).is_file() else None
    from huggingface_hub import HfApi
    from huggingface_hub.errors import EntryNotFoundError

    try:
        metadata = HfApi().parse_safetensors_file_metadata(path, filename, revision=revision)
    except EntryNotFoundError:
        return None
    except ConnectionError as err:  # offline (HF_HUB_OFFLINE, or apa.offline found no network): the cache
        return _header(_cached_file(path, filename, revision, err))
    return {name: list(info.shape) for name, info in metadata.tensors.items()}


def _weight_names(path: str, revision: str | None) -> set[str]:
    """The tensor names of a checkpoint's root weight files (model.safetensors or its shards), headers only."""
    local = Path(path).expanduser()
    if local.exists():
        return {name for file in sorted(local.glob("*.safetensors")) for name in _header(file)}
    from huggingface_hub import HfApi

    try:
        files = HfApi().get_safetensors_metadata(path, revision=revision).files_metadata
    except ConnectionError as err:  # offline: the cached shards named by the cached index, or the one file
        try:
            index = json.loads(_cached_file(path, "model.safetensors.index.json", revision, err).read_text())
            shards = sorted(set(index["weight_map"].values()))
        except OSError:
            shards = ["model.safetensors"]
        return {name for shard in shards for name in _header(_cached_file(path, shard, revision, err))}
    return {name for metadata in files.values() for name in metadata.tensors}


def check(path: str, revision: str | None, adapter: str, report: Report) -> None:
    from apa.checkpoint.hub import check_hub_access, looks_like_hub_id

    check_hub_access([(path, "model", "checkpoint", revision)])  # no hub, nothing cached: one line, before any import

    import torch
    from transformers import AutoConfig, Phi4MultimodalForCausalLM

    from apa.checkpoint.layout import load_processor
    from apa.checkpoint.loading import CONVERT_HINT
    from apa.checkpoint.tokenizer import tokenizer_file_problems

    local = Path(path).expanduser()
    if not local.exists() and not looks_like_hub_id(path):
        raise FileNotFoundError(f"{path} does not exist (neither a folder nor a hub id). {CONVERT_HINT}")
    config_file = _local_or_hub(path, "config.json", revision)
    if config_file is None:
        raise FileNotFoundError(f"{path} has no config.json, so it is not a model checkpoint. {CONVERT_HINT}")
    problem = native_format_problem(json.loads(config_file.read_text()))
    if problem:
        report.problem(f"{problem}. {CONVERT_HINT}")
        return
    config = AutoConfig.from_pretrained(path, revision=revision)
    report.ok(f"native format: {type(config).__name__} (model_type phi4_multimodal, no remote code)")

    released = released_config()
    _report(report, layout_problems(config), "layout as released: longrope rotary embedding (original 4096 "
            f"positions), sliding window {config.sliding_window}, tied embeddings, audio relative-bias distance "
            f"{config.audio_config.bias_max_distance}")
    sizes = {f: (dotted(config, f), dotted(released, f)) for f in SIZE_FIELDS}
    if all(mine == real for mine, real in sizes.values()):
        report.ok(f"sizes as released: hidden {config.hidden_size}, {config.num_hidden_layers} layers, vocabulary "
                  f"{config.vocab_size}, {config.audio_config.num_blocks} conformer blocks")
    else:
        report.note("sizes differ from the released checkpoint (a miniature?): " + ", ".join(
            f"{f} {mine} (released {real})" for f, (mine, real) in sizes.items() if mine != real))
    with torch.device("meta"):
        model = Phi4MultimodalForCausalLM(config)
    expected = set(model.state_dict())
    if config.tie_word_embeddings:
        expected.discard("lm_head.weight")  # the tied head is the embedding matrix, stored once
    found = _weight_names(path, revision)
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    weight_problems = [f"{len(keys)} weight(s) {what} the weight files, e.g. {keys[0]}" for keys, what in
                       ((missing, "missing from"), (unexpected, "unexpected in")) if keys]
    _report(report, weight_problems, f"weights: the files hold exactly the model's {len(expected)} tensors "
            f"({'LM head tied to the embeddings' if config.tie_word_embeddings else 'separate LM head'}, as the "
            "config says)")

    try:
        processor = load_processor(path, revision)
    except (OSError, ValueError, UserError) as err:
        report.problem(f"the processor does not load: {err}")
        return
    named = json.loads(processor.checkpoint_files.get("processor_config.json", "{}")).get(
        "image_processor", {}).get("image_processor_type", "not named")
    report.ok(f"processor: {type(processor).__name__} from {type(processor.tokenizer).__name__} and "
              f"{type(processor.audio_processor).__name__}; the image processor the files name ({named}) is not "
              "loaded (it imports torchvision; this project is audio-only)")
    tokenizer = processor.tokenizer
    _report(report, tokenizer_file_problems(tokenizer, path, revision),
            "tokenizer: normalizer, pre-tokenizer and BPE settings exactly as tokenizer.json says")
    _report(report, token_problems(config, tokenizer),
            f"token ids agree: audio {tokenizer.audio_token}={tokenizer.audio_token_id}, image "
            f"{tokenizer.image_token}={getattr(tokenizer, 'image_token_id', None)} in tokenizer and config; "
            "<|user|>, <|assistant|>, <|end|> present; <|end|> ends generation")
    if config.vocab_size == released.vocab_size and tokenizer.audio_token_id != REAL_TOKEN_IDS["audio"]:
        report.problem(f"full-size vocabulary but the audio token id is {tokenizer.audio_token_id}, "
                       f"not the released {REAL_TOKEN_IDS['audio']}")
    _report(report, chat_template_problems(tokenizer),
            "chat template: renders the project's prompt exactly (<|user|>…<|end|><|assistant|>)")
    _report(report, feature_extractor_problems(config, processor.audio_processor),
            f"audio features: {processor.audio_processor.sampling_rate} Hz, {processor.audio_processor.feature_size} "
            f"mel bins, compression {processor.audio_processor.audio_compression_rate} and downsample "
            f"{processor.audio_processor.audio_downsample_rate}, as the audio encoder reads them")
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
    names = [name for name, _ in model.named_modules()]
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
    shapes = _tensor_shapes(path, f"{adapter}/adapter_model.safetensors", revision)
    if shapes is None:
        report.problem(f"no {adapter}/adapter_model.safetensors")
        return
    formats, problems = lora_key_report(shapes, layers)
    problems += lora_shape_problems(shapes, adapter_cfg.get("r", 8))
    for problem in problems:
        report.problem(f"{adapter}/adapter_model.safetensors: {problem}")
    if not problems:
        report.ok(f"{adapter}/adapter_model.safetensors: {len(shapes)} LoRA tensors of rank {shape[0]}, keys in the "
                  f"{'/'.join(sorted(formats))} spelling, every projection covered (the loader accepts PEFT, "
                  "converter and remote-code spellings and checks every tensor after loading)")
    report.note("attention: the audio encoder runs on sdpa whatever model.attn_implementation asks (flash-attention "
                "cannot take its relative-position bias mask)")


def _report(report: Report, problems: list[str], ok: str) -> None:
    for problem in problems:
        report.problem(problem)
    if not problems:
        report.ok(ok)


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
    except (OSError, ValueError, UserError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        logging.disable(logging.NOTSET)  # called in process (apa check, tests): leave logging as it was
    print("no problems found" if not report.problems else f"{report.problems} problem(s) found")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
