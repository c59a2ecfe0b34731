"""Load the native Phi-4-multimodal, add the task control tokens, attach the speech LoRA, report parameters."""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from pathlib import Path

import torch

from apa.constants import CONTROL_TOKENS
from apa.errors import UserError
from apa.offline import download_hint

log = logging.getLogger(__name__)

RELEASED_ID, NATIVE_REVISION = "microsoft/Phi-4-multimodal-instruct", "refs/pr/70"  # where the native weights sit
CONVERT_HINT = (
    f"Use the native transformers checkpoint: model.path={RELEASED_ID} with "
    f"model.revision={NATIVE_REVISION} (where transformers' own tests load it), or a local folder made by "
    f"`{download_hint(RELEASED_ID, NATIVE_REVISION)}`. "
    "A remote-code checkpoint converts with transformers' "
    "models/phi4_multimodal/convert_phi4_multimodal_weights_to_hf.py."
)


class ModelLoadError(UserError, RuntimeError):
    """The checkpoint cannot be used; the message says what was found and how to get a usable one."""


def resolve_model_path(model_cfg) -> str:
    """The folder or hub id to load from; generates the tiny checkpoint when `model.tiny` is set."""
    if model_cfg.get("random"):
        from apa.checkpoint.full_size import ensure_random_checkpoint

        return str(ensure_random_checkpoint(model_cfg.get("cache_dir")))
    if model_cfg.get("tiny"):
        from apa.checkpoint.tiny import TinySpec, ensure_tiny_checkpoint

        return str(ensure_tiny_checkpoint(TinySpec(**model_cfg.tiny), model_cfg.get("cache_dir")))
    path = model_cfg.get("path")
    if not path:
        raise ModelLoadError(f"model.path is not set. {CONVERT_HINT}")
    return str(path)


def check_checkpoint(path: str, revision: str | None = None) -> None:
    """Refuse missing folders and the old remote-code format (a folder's config.json, or a hub id's at `revision`)
    before transformers fails deep inside (or asks to trust remote code)."""
    from apa.checkpoint.hub import looks_like_hub_id
    from apa.checkpoint.layout import native_format_problem

    local = Path(path).expanduser()
    if local.exists():
        config_file = local / "config.json"
        if not config_file.is_file():
            raise ModelLoadError(f"{local} has no config.json, so it is not a model checkpoint. {CONVERT_HINT}")
    elif not looks_like_hub_id(path):
        raise ModelLoadError(f"model.path={path} does not exist. {CONVERT_HINT}")
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        try:
            config_file = Path(hf_hub_download(path, "config.json", revision=revision))
        except LocalEntryNotFoundError as err:
            raise ModelLoadError(f"{path}: config.json at revision {revision} is neither in the local hub cache nor "
                                 "downloadable (HF_HUB_OFFLINE=1, or no network): connect, or make a local copy "
                                 f"(`{download_hint(path, revision)}`, then model.path=<dir>)") from err
        except EntryNotFoundError as err:
            raise ModelLoadError(f"{path} has no config.json at revision {revision}. {CONVERT_HINT}") from err
    problem = native_format_problem(json.loads(config_file.read_text()))
    if problem:
        where = str(local) if local.exists() else f"{path} at revision {revision}"
        raise ModelLoadError(f"{where} is {problem}. {CONVERT_HINT}")


def checkpoint_problems(config, processor, path: str, revision: str | None = None) -> list[str]:
    """Every check that needs no weights: layout as released, tokenizer as its file says, token ids, chat template,
    audio features as the encoder reads them."""
    from apa.checkpoint.layout import (
        chat_template_problems,
        feature_extractor_problems,
        layout_problems,
        token_problems,
    )
    from apa.checkpoint.tokenizer import tokenizer_file_problems

    tokenizer = processor.tokenizer
    return [*layout_problems(config), *tokenizer_file_problems(tokenizer, path, revision),
            *token_problems(config, tokenizer), *chat_template_problems(tokenizer),
            *feature_extractor_problems(config, processor.audio_processor)]


def compute_dtype(requested: str) -> torch.dtype:
    """bf16 where the GPU supports it; float32 otherwise (CPU runs, older GPUs)."""
    if requested == "float32":
        return torch.float32
    bf16_ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if requested == "bfloat16" and not bf16_ok:
        log.warning("model.dtype=bfloat16 but this machine has no bf16 GPU: loading in float32")
    return torch.bfloat16 if bf16_ok else torch.float32


def attention_implementation(requested: str) -> dict[str, str]:
    """Per sub-model attention: the language model (and the unused vision tower) get `requested` where it can run,
    the audio encoder always sdpa: flash-attention cannot take its float relative-position bias mask.

    flash_attention_2 needs the flash-attn package and a GPU; without them, sdpa (PyTorch's fused kernels), logged.
    """
    if requested == "flash_attention_2":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is None or not torch.cuda.is_available():
            log.warning("model.attn_implementation=flash_attention_2 needs a GPU and `pip install flash-attn`: "
                        "using sdpa instead")
            requested = "sdpa"
    return {"": requested, "vision_config": requested, "audio_config": "sdpa"}


def load_base(model_cfg):
    """(model, processor, path) from `model.path` at `model.revision`, weights in the compute dtype. The checks that
    need no weights run first (`checkpoint_problems`), those on the loaded weights right after loading; either kind
    of problem stops the run in one line."""
    from transformers import AutoConfig, Phi4MultimodalForCausalLM

    from apa.checkpoint.hub import check_hub_access
    from apa.checkpoint.layout import load_processor, loaded_weight_problems

    path = resolve_model_path(model_cfg)
    revision = model_cfg.get("revision")
    check_hub_access([(path, "model", "model.path", revision)])  # no hub: the cache at once, or one line
    check_checkpoint(path, revision)
    config = AutoConfig.from_pretrained(path, revision=revision)
    processor = load_processor(path, revision)
    _refuse(path, checkpoint_problems(config, processor, path, revision),
            "Tokenizer, processor and config must come from the same checkpoint and revision")
    attention = attention_implementation(model_cfg.get("attn_implementation", "sdpa"))
    dtype = compute_dtype(model_cfg.get("dtype", "auto"))
    if model_cfg.get("random"):
        from apa.checkpoint.full_size import build_model

        device = "cuda" if torch.cuda.is_available() else "cpu"
        log.warning("model=%s has random weights: for speed and memory measurements only", model_cfg.name)
        config._attn_implementation = attention
        return build_model(config, device, dtype), processor, path
    from safetensors import SafetensorError

    try:
        model, info = Phi4MultimodalForCausalLM.from_pretrained(path, revision=revision, dtype=dtype,
                                                                attn_implementation=attention, output_loading_info=True)
    except SafetensorError as e:
        raise ModelLoadError(damaged_weights(path, e)) from e
    _refuse(path, loaded_weight_problems(model, info), "The weights must be the checkpoint's own, complete")
    return model, processor, path


def damaged_weights(where, err: Exception) -> str:
    """The one line for a weights file that cannot be read (truncated, overwritten)."""
    return (f"{where}: a weights file cannot be read ({str(err).splitlines()[0][:160]}): it is truncated or damaged. "
            "Delete the folder and run again (a generated miniature in the cache is made anew), or download the "
            "checkpoint again")


def _refuse(path: str, problems: list[str], fix: str) -> None:
    if problems:
        raise ModelLoadError(f"{path}: " + "; ".join(problems) + f". {fix} (`apa check {path}` lists every check)")


def add_control_tokens(model, processor, seed: int) -> list[int]:
    """Add <|APA|>/<|MDD|> as special tokens with distinct, seeded embedding rows; return their ids.

    The rows start as the embedding mean plus seeded noise at the embeddings' own scale, so they are distinct from
    each other and from every existing token, and the same for the same seed. They travel with the adapter
    (PEFT `trainable_token_indices` saves them), so a plain PEFT reload restores them exactly.
    """
    tokenizer = processor.tokenizer
    tokenizer.add_special_tokens({"additional_special_tokens": list(CONTROL_TOKENS)},
                                 replace_extra_special_tokens=False)
    ids = tokenizer.convert_tokens_to_ids(list(CONTROL_TOKENS))
    embeddings = model.get_input_embeddings()
    if max(ids) >= embeddings.weight.shape[0]:  # the real matrix has spare rows; resize only when it has none left
        log.warning("resizing the embeddings from %d to %d rows for the control tokens", embeddings.weight.shape[0],
                    max(ids) + 1)
        model.resize_token_embeddings(max(ids) + 1, mean_resizing=False)
        embeddings = model.get_input_embeddings()
    weight = embeddings.weight
    with torch.no_grad():
        known = weight[: min(ids)].float()
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn((len(ids), weight.shape[1]), generator=gen).to(known.device)  # CPU draw: same on a GPU
        rows = known.mean(0) + noise * known.std(0)
        weight[ids] = rows.to(weight.dtype).to(weight.device)
    return ids


# model.unfreeze choices -> module names. Only the speech projector: its *_for_vision_speech twin never sees a
# speech-only input, so it would get no gradient (and DDP would wait for one).
UNFREEZABLE = {
    "audio_encoder": ("audio_embed.encoder",),
    "audio_projector": ("audio_embed.up_proj_for_speech", "audio_embed.down_proj_for_speech"),
}


def unfrozen_modules(unfreeze) -> list[str]:
    unknown = sorted(set(unfreeze) - set(UNFREEZABLE))
    if unknown:
        raise ValueError(f"model.unfreeze: unknown module group(s) {unknown}; choose from {sorted(UNFREEZABLE)}")
    return [name for group in unfreeze for name in UNFREEZABLE[group]]


def attach_lora(model, lora_cfg, model_path: str, control_token_ids: list[int], seed: int, unfreeze=(),
                revision: str | None = None, trainable_dtype: str = "float32"):
    """Wrap `model` in a PeftModel per the `lora` config group.

    `init_from` set: the adapter on disk (`<model>/<init_from>`, fetched at `revision` from the hub), loaded by
    `load_speech_adapter` (any key spelling, every tensor checked), trainable. Otherwise a fresh LoRA on the same
    modules. Either way the control-token rows ride along as `trainable_token_indices` (when there are any).
    `unfreeze` (model.unfreeze) trains whole modules too, as PEFT `modules_to_save`: trainable copies that are saved
    in the adapter folder and restored by a plain `PeftModel.from_pretrained`. Their weights are kept in
    `trainable_dtype` (model.trainable_dtype): float32 master weights by default, like PEFT's LoRA weights, since
    AdamW's small updates to bf16 weights mostly round away; the forward pass still computes in bf16 under autocast.
    The adapter config records `revision`, so that `AutoPeftModelForCausalLM` loads the same base revision.
    """
    from peft import LoraConfig, PeftConfig, get_peft_model

    modules_to_save = unfrozen_modules(unfreeze) or None
    torch.manual_seed(seed)  # LoRA init happens here, before the Trainer seeds anything
    token_indices = {"embed_tokens": list(control_token_ids)} if control_token_ids else None
    if lora_cfg.init_from:
        adapter_dir = adapter_folder(model_path, lora_cfg.init_from, revision)
        config = PeftConfig.from_pretrained(adapter_dir)
        for key, value in (("r", lora_cfg.r), ("lora_alpha", lora_cfg.alpha), ("lora_dropout", lora_cfg.dropout)):
            if getattr(config, key) != value:
                raise ModelLoadError(f"{adapter_dir} has {key}={getattr(config, key)} but lora={lora_cfg.name} "
                                     f"expects {value}; fix the lora config or the checkpoint")
        config.inference_mode = False
        config.trainable_token_indices = token_indices
        config.modules_to_save = modules_to_save
        peft_model = load_speech_adapter(model, config, adapter_dir)
    else:
        if Path(model_path, "speech-lora").is_dir() or not Path(model_path).exists():
            log.info("lora=%s starts a fresh LoRA (r=%d); the checkpoint's own speech adapter (speech-lora/) is not "
                     "used", lora_cfg.name, lora_cfg.r)
        config = LoraConfig(
            r=lora_cfg.r,
            lora_alpha=lora_cfg.alpha,
            lora_dropout=lora_cfg.dropout,
            target_modules=lora_cfg.target_modules,
            trainable_token_indices=token_indices,
            modules_to_save=modules_to_save,
            task_type="CAUSAL_LM",
        )
        _refuse_wrong_targets(model, config, f"lora={lora_cfg.name}")
        peft_model = get_peft_model(model, config)
    peft_model.peft_config["default"].revision = revision  # saved in adapter_config.json with the base's hub id
    _expose_head_bias(peft_model)
    for name, param in peft_model.named_parameters():
        if "trainable_tokens_delta" in name:
            param.requires_grad_(bool(lora_cfg.train_control_tokens))
        elif ".modules_to_save." in name:
            param.data = param.data.to(getattr(torch, str(trainable_dtype)))
    return peft_model


def _refuse_wrong_targets(model, config, origin: str) -> None:
    from apa.checkpoint.layout import target_module_problems

    names = [name for name, _ in model.named_modules()]
    problems = target_module_problems(config, names, model.config.get_text_config().num_hidden_layers)
    if problems:
        raise ModelLoadError(f"{origin}: " + "; ".join(problems))


def load_speech_adapter(model, config, adapter_dir: str):
    """`model` wrapped with the adapter in `adapter_dir`, whichever way its keys are spelt (PEFT-prefixed,
    transformers' converter: unprefixed, or remote code: `.lora_A.speech.weight`), then proved: the wrapped modules
    are exactly the language model's 4 projections per layer, and every LoRA tensor equals the file's (none is left
    at its initial value). A plain `PeftModel.from_pretrained` on a converter-style folder warns and leaves lora_B
    at zero instead."""
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    from apa.checkpoint.layout import lora_key_report, lora_shape_problems, normalise_lora_key

    _refuse_wrong_targets(model, config, str(adapter_dir))
    weights_file = Path(adapter_dir) / "adapter_model.safetensors"
    if not weights_file.is_file():
        raise ModelLoadError(f"{adapter_dir} has no adapter_model.safetensors")
    on_disk = load_file(str(weights_file))
    layers = model.config.get_text_config().num_hidden_layers
    _, problems = lora_key_report(on_disk, layers)
    problems += lora_shape_problems({key: tuple(value.shape) for key, value in on_disk.items()}, config.r)
    if problems:
        raise ModelLoadError(f"{weights_file}: " + "; ".join(problems))
    weights = {normalise_lora_key(key)[0]: value for key, value in on_disk.items()}
    peft_model = get_peft_model(model, config)
    state = get_peft_model_state_dict(peft_model)
    set_peft_model_state_dict(peft_model, {**state, **weights})
    live = get_peft_model_state_dict(peft_model)
    differing = [k for k, v in weights.items() if not torch.equal(live[k].detach().cpu(), v.to(live[k].dtype))]
    if differing:
        raise ModelLoadError(f"{weights_file}: {len(differing)} LoRA tensor(s) did not load, e.g. {differing[0]}")
    log.info("speech adapter %s: %d LoRA tensors on %d modules loaded and checked against the file", adapter_dir,
             len(weights), len(weights) // 2)
    return peft_model


def adapter_folder(model_path: str, subfolder: str, revision: str | None = None) -> str:
    """The adapter folder of a local checkpoint, or its download from the hub at the base model's revision."""
    local = Path(model_path) / subfolder
    if local.is_dir():
        return str(local)
    if Path(model_path).exists():
        raise ModelLoadError(f"{local} not found: lora.init_from={subfolder} needs the checkpoint's adapter folder")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        root = snapshot_download(model_path, revision=revision, allow_patterns=[f"{subfolder}/*"])
    except LocalEntryNotFoundError as err:  # offline (or no network) and not in the cache
        raise ModelLoadError(f"{model_path}: {subfolder}/ at revision {revision} is neither in the local hub cache nor "
                             f"downloadable (HF_HUB_OFFLINE=1, or no network): connect, or make a local copy "
                             f"(`{download_hint(model_path, revision)}`, then model.path=<dir>)") from err
    return str(Path(root) / subfolder)


def _expose_head_bias(peft_model) -> None:
    """Make the tied LM head usable by TRL's fused (chunked) loss.

    With tied embeddings, PEFT wraps the LM head too, so the control-token rows are the same on the input and
    output side (a plain reload does the same). The wrapper's `weight` already returns the merged matrix, but TRL's
    fused forward also reads `lm_head.bias`, which the wrapper does not forward. Phi-4's head has no bias; exposing
    the base layer's (None) keeps the fused loss exact instead of untying the head, which would make a reloaded
    adapter give different logits.
    """
    head = peft_model.get_base_model().get_output_embeddings()
    if not hasattr(head, "bias"):
        head.bias = head.token_adapter.base_layer.bias


# ---------------------------------------------------------------------------------------------------------------
# Parameter report
# ---------------------------------------------------------------------------------------------------------------

_GROUPS = (
    ("lora", ("lora_A", "lora_B")),
    ("control_tokens", ("trainable_tokens_delta",)),
    ("audio_encoder", ("audio_embed.encoder",)),
    ("audio_projector", ("audio_embed.up_proj", "audio_embed.down_proj")),
    ("vision", ("image_embed",)),
    ("language_model", ("",)),
)


def parameter_report(model) -> dict:
    """Total and trainable counts, overall and by group; tied weights counted once."""
    groups: dict[str, dict[str, int]] = OrderedDict((g, {"total": 0, "trainable": 0}) for g, _ in _GROUPS)
    seen: set[int] = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen or ".original_module." in name:  # an unfrozen module's frozen twin: counted once
            continue
        seen.add(id(param))
        group = next(g for g, keys in _GROUPS if any(k in name for k in keys))
        groups[group]["total"] += param.numel()
        if param.requires_grad:
            groups[group]["trainable"] += param.numel()
    total = sum(g["total"] for g in groups.values())
    trainable = sum(g["trainable"] for g in groups.values())
    return {"total": total, "trainable": trainable, "trainable_share": trainable / total, "groups": dict(groups)}


def format_parameter_table(report: dict) -> str:
    lines = [f"{'group':<16}{'total':>16}{'trainable':>16}"]
    for group, counts in report["groups"].items():
        lines.append(f"{group:<16}{counts['total']:>16,}{counts['trainable']:>16,}")
    lines.append(f"{'all':<16}{report['total']:>16,}{report['trainable']:>16,}"
                 f"  ({100 * report['trainable_share']:.3f}% trainable)")
    return "\n".join(lines)
