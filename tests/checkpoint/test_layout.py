"""The tiny checkpoint against the released checkpoint's layout, and the loaders held to it: processor classes,
adapter key spellings, target modules, token ids, adapter revision, attention per sub-model."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from apa.checkpoint.layout import REAL_IMAGE_PROCESSOR, load_processor, normalise_lora_key
from apa.checkpoint.loading import ModelLoadError, add_control_tokens, attach_lora, load_base
from tests.conftest import REPO, compose_config

TINY_LAYERS = 2


@pytest.fixture(scope="module")
def tiny():
    cfg = compose_config("experiment=demo")
    _, _, path = load_base(cfg.model)
    return cfg, Path(path)


def _copy(tiny_path: Path, dest: Path) -> Path:
    shutil.copytree(tiny_path, dest)
    return dest


def _respell(adapter: Path, fmt: str) -> dict:
    """Rewrite the converter-style adapter file in another spelling; return the original tensors."""
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    if fmt == "peft":
        new = {f"base_model.model.{k}": v for k, v in tensors.items()}
    elif fmt == "remote-code":
        new = {k.replace(".weight", ".speech.weight"): v for k, v in tensors.items()}
    else:
        new = tensors
    save_file(new, str(adapter / "adapter_model.safetensors"))
    return tensors


@pytest.mark.slow
def test_tiny_processor_files_name_the_real_classes_and_load_without_torchvision(tiny):
    _, path = tiny
    config = json.loads((path / "processor_config.json").read_text())
    assert config["processor_class"] == "Phi4MultimodalProcessor"
    assert config["image_processor"]["image_processor_type"] == REAL_IMAGE_PROCESSOR["image_processor_type"]
    assert config["audio_processor"]["feature_extractor_type"] == "Phi4MultimodalFeatureExtractor"
    from transformers import AutoProcessor

    if importlib.util.find_spec("torchvision") is None:  # the CPU torch wheel here: what the real layout does too
        with pytest.raises(ImportError, match="[Tt]orchvision"):
            AutoProcessor.from_pretrained(str(path))
    else:
        assert type(AutoProcessor.from_pretrained(str(path)).image_processor).__name__.startswith(
            "Phi4MultimodalImageProcessor")
    processor = load_processor(str(path))
    assert type(processor.audio_processor).__name__ == "Phi4MultimodalFeatureExtractor"
    assert processor.tokenizer.audio_token == "<|endoftext11|>" and processor.tokenizer.image_token == "<|endoftext10|>"


@pytest.mark.slow
def test_the_projects_processor_needs_no_torchvision(tiny):
    """load_processor works in a process where torchvision cannot be imported, even on a machine that has it."""
    _, path = tiny
    code = ("import sys; sys.modules['torchvision'] = None\n"
            "from apa.checkpoint.layout import load_processor\n"
            f"p = load_processor({str(path)!r})\n"
            "assert 'torchvision' not in {m.split('.')[0] for m in sys.modules if sys.modules[m] is not None}\n"
            "print(type(p).__name__, type(p.audio_processor).__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["AudioOnlyProcessor", "Phi4MultimodalFeatureExtractor"]


def test_tiny_speech_lora_is_written_as_the_converter_writes_it(tiny):
    _, path = tiny
    config = json.loads((path / "speech-lora" / "adapter_config.json").read_text())
    assert config["target_modules"] == r"model.layers.\d+.((self_attn.(qkv|o)_proj)|(mlp.(gate_up|down)_proj))"
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (320, 640, 0.01)
    keys = load_file(str(path / "speech-lora" / "adapter_model.safetensors")).keys()
    assert all(k.startswith("model.layers.") and normalise_lora_key(k)[1] == "converter" for k in keys)
    assert len(keys) == 2 * 4 * TINY_LAYERS


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["converter", "peft", "remote-code"])
def test_pretrained_adapter_loads_in_every_spelling_with_every_tensor_checked(tiny, tmp_path, fmt):
    cfg, path = tiny
    copy = _copy(path, tmp_path / "ckpt")
    original = _respell(copy / "speech-lora", fmt)
    model, processor, _ = load_base(cfg.model)
    ids = add_control_tokens(model, processor, 42)
    peft_model = attach_lora(model, compose_config("lora=pretrained_r320").lora, str(copy), ids, seed=42)
    live = {k: v for k, v in peft_model.state_dict().items() if ".lora_" in k}
    wrapped = {k.split(".lora_")[0] for k in live}
    assert len(wrapped) == 4 * TINY_LAYERS and all(".layers." in m and "audio" not in m for m in wrapped)
    for key, value in original.items():  # every tensor equals the file; lora_B is not left at zero
        module, ab = key.rsplit(".", 2)[0], key.rsplit(".", 2)[1]
        assert torch.equal(live[f"base_model.model.{module}.{ab}.default.weight"], value.to(torch.float32)), key
    assert all(v.abs().sum() > 0 for k, v in original.items() if "lora_B" in k)


@pytest.mark.slow
def test_final_model_from_a_converter_style_adapter_reloads_with_plain_peft(tiny, tmp_path):
    from peft import PeftModel

    cfg, path = tiny
    model, processor, _ = load_base(cfg.model)
    ids = add_control_tokens(model, processor, 42)
    peft_model = attach_lora(model, compose_config("lora=pretrained_r320").lora, str(path), ids, seed=42)
    peft_model.save_pretrained(tmp_path / "final_model")
    base, processor2, _ = load_base(cfg.model)
    add_control_tokens(base, processor2, 0)  # the rows exist; their values come from the adapter folder
    reloaded = PeftModel.from_pretrained(base, str(tmp_path / "final_model"))
    expected = {k: v for k, v in peft_model.state_dict().items() if ".lora_" in k or "trainable_tokens" in k}
    got = reloaded.state_dict()
    assert expected and all(torch.equal(got[k], v) for k, v in expected.items())


@pytest.mark.slow
def test_list_form_target_modules_are_refused(tiny, tmp_path):
    cfg, path = tiny
    copy = _copy(path, tmp_path / "ckpt")
    config_file = copy / "speech-lora" / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["target_modules"] = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    config_file.write_text(json.dumps(config))
    model, processor, _ = load_base(cfg.model)
    with pytest.raises(ModelLoadError, match=r"outside the language model's projections.*audio.*regex"):
        attach_lora(model, compose_config("lora=pretrained_r320").lora, str(copy), [], seed=42)


@pytest.mark.slow
def test_adapter_with_missing_tensors_is_refused(tiny, tmp_path):
    cfg, path = tiny
    copy = _copy(path, tmp_path / "ckpt")
    weights = load_file(str(copy / "speech-lora" / "adapter_model.safetensors"))
    weights.pop(next(k for k in weights if "lora_B" in k))
    save_file(weights, str(copy / "speech-lora" / "adapter_model.safetensors"))
    model, _, _ = load_base(cfg.model)
    with pytest.raises(ModelLoadError, match="1 of the 16 LoRA tensors are missing"):
        attach_lora(model, compose_config("lora=pretrained_r320").lora, str(copy), [], seed=42)


def test_token_id_mismatch_between_tokenizer_and_config_is_refused(tiny, tmp_path):
    _, path = tiny
    copy = _copy(path, tmp_path / "ckpt")
    config_file = copy / "config.json"
    config = json.loads(config_file.read_text())
    config["audio_config"]["audio_token_id"] = 5
    config_file.write_text(json.dumps(config))
    cfg = compose_config("model=phi4mm", f"model.path={copy}", "model.revision=null", "model.dtype=float32")
    with pytest.raises(ModelLoadError, match=r"audio token <\|endoftext11\|> has id \d+ .* is 5.*ignore the audio"):
        load_base(cfg.model)


def test_adapter_download_uses_the_base_models_revision(monkeypatch, tmp_path):
    import huggingface_hub

    from apa.checkpoint.loading import adapter_folder

    calls = []

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None, **kwargs):
        calls.append((repo_id, revision, allow_patterns))
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    folder = adapter_folder("microsoft/Phi-4-multimodal-instruct", "speech-lora", "refs/pr/70")
    assert calls == [("microsoft/Phi-4-multimodal-instruct", "refs/pr/70", ["speech-lora/*"])]
    assert folder == str(tmp_path / "speech-lora")


def test_flash_attention_requested_keeps_the_audio_encoder_on_sdpa(tiny, monkeypatch):
    from transformers import AutoConfig, Phi4MultimodalForCausalLM

    import apa.checkpoint.loading

    _, path = tiny
    monkeypatch.setattr(apa.checkpoint.loading.torch.cuda, "is_available", lambda: True)
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "flash_attn"
                        else real_find_spec(name, *a))
    attention = apa.checkpoint.loading.attention_implementation("flash_attention_2")
    assert attention == {"": "flash_attention_2", "vision_config": "flash_attention_2", "audio_config": "sdpa"}
    with torch.device("meta"):  # built on sdpa (flash-attn is not installed here), then set as load_base sets it
        model = Phi4MultimodalForCausalLM(AutoConfig.from_pretrained(path))
    model.config._attn_implementation = attention
    audio_attention = model.model.embed_tokens_extend.audio_embed.encoder.encoders[0].self_attn
    assert audio_attention.config._attn_implementation == "sdpa"
    assert model.model.layers[0].self_attn.config._attn_implementation == "flash_attention_2"


def test_flash_attention_without_the_package_falls_back_to_sdpa_everywhere():
    from apa.checkpoint.loading import attention_implementation

    assert set(attention_implementation("flash_attention_2").values()) == {"sdpa"}  # no GPU, no flash-attn here


def test_check_checkpoint_reports_the_tiny_checkpoint_clean(tiny, capsys):
    from apa.checkpoint.check import main

    _, path = tiny
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "PROBLEM" not in out and out.rstrip().endswith("no problems found")
    assert "keys in the converter spelling" in out and "Phi4MultimodalImageProcessorFast" in out


def test_check_checkpoint_names_each_problem_of_a_broken_copy(tiny, tmp_path, capsys):
    from apa.checkpoint.check import main

    _, path = tiny
    copy = _copy(path, tmp_path / "broken")
    config = json.loads((copy / "config.json").read_text())
    config["audio_config"]["audio_token_id"] = 7
    config["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.75}
    (copy / "config.json").write_text(json.dumps(config))
    adapter_cfg = json.loads((copy / "speech-lora" / "adapter_config.json").read_text())
    adapter_cfg["target_modules"] = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    (copy / "speech-lora" / "adapter_config.json").write_text(json.dumps(adapter_cfg))
    weights = load_file(str(copy / "speech-lora" / "adapter_model.safetensors"))
    weights.pop("model.layers.1.mlp.down_proj.lora_B.weight")
    save_file(weights, str(copy / "speech-lora" / "adapter_model.safetensors"))
    assert main([str(copy)]) == 1
    problems = [line for line in capsys.readouterr().out.splitlines() if line.startswith("PROBLEM")]
    assert len(problems) == 5, problems  # the rope change shows twice: its type and its lost original length
    joined = "\n".join(problems)
    assert "rope_parameters.rope_type='default' (released: 'longrope')" in joined
    assert "rope_parameters.original_max_position_embeddings=None (released: 4096)" in joined
    assert "audio token <|endoftext11|> has id" in joined and "is 7" in joined
    assert "outside the language model's projections" in joined
    assert "1 of the 16 LoRA tensors are missing, e.g. base_model.model.model.layers.1.mlp.down_proj.lora_B" in joined


def test_check_checkpoint_refuses_a_remote_code_checkpoint(tmp_path, capsys):
    from apa.checkpoint.check import main
    from apa.checkpoint.layout import remote_config

    (tmp_path / "config.json").write_text(json.dumps(remote_config()))
    assert main([str(tmp_path)]) == 1
    assert "not a native Phi-4-multimodal checkpoint" in capsys.readouterr().out
    assert main([str(tmp_path / "missing")]) == 2


@pytest.mark.slow
def test_untrained_baseline_runs_as_the_paper_did_with_the_speech_lora_and_no_control_tokens(tmp_path):
    """evaluate.py without run_dir: the checkpoint's own speech LoRA on, prompts without <|APA|>/<|MDD|>, recorded."""
    from omegaconf import OmegaConf

    from apa.checkpoint.adapters import load_baseline
    from apa.evaluation.evaluate import evaluate
    from tests.conftest import FAST_EVAL, compose_eval_config

    cfg = compose_eval_config("model=tiny", "data=sample", "data.limit=2", *FAST_EVAL)
    model, processor, _ = load_baseline(cfg.model, cfg.baseline, cfg.seed)
    assert model.active_adapter == "default" and model.peft_config["default"].r == 320  # speech-lora active
    assert "<|APA|>" not in processor.tokenizer.get_vocab()
    from apa.evaluation.examples import evaluation_examples

    rows = evaluation_examples(cfg, processor.tokenizer.audio_token, cfg.baseline.control_tokens)
    assert rows and all(r["user_content"].startswith(processor.tokenizer.audio_token) for r in rows)
    evaluate(cfg, ["model=tiny", "data=sample", "data.limit=2"], fallback_dir=tmp_path)
    settings = json.loads((tmp_path / "base_model" / "eval_settings.json").read_text())
    assert (settings["speech_lora"], settings["control_tokens"]) == (True, False)
    lines = (tmp_path / "base_model" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 4
    fingerprint = json.loads((tmp_path / "base_model" / "fingerprint.json").read_text())
    assert fingerprint["weights"].startswith("untrained:") and not (tmp_path / ".lock").exists()
    other = OmegaConf.merge(cfg, {"baseline": {"speech_lora": False, "control_tokens": True}})
    bare, processor, _ = load_baseline(other.model, other.baseline, other.seed)
    assert not hasattr(bare, "peft_config") and "<|APA|>" in processor.tokenizer.get_vocab()
