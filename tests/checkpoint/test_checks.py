"""What training, evaluation and `apa check` refuse: each damage of a checkpoint copy stops model loading in one line
(before any weight is loaded where no weight is needed) and shows as a problem in `apa check`."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from apa.checkpoint.check import main as check_main
from apa.checkpoint.loading import attach_lora, load_base, resolve_model_path
from apa.errors import UserError
from tests.conftest import compose_config

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out


@pytest.fixture(scope="module")
def tiny_path():
    return Path(resolve_model_path(compose_config("experiment=demo", "model=tiny_released").model))


def _edit_json(path: Path, edit) -> None:
    content = json.loads(path.read_text())
    edit(content)
    path.write_text(json.dumps(content))


def _drop_weight(ckpt: Path) -> None:
    weights = load_file(str(ckpt / "model.safetensors"))
    weights.pop("model.layers.1.mlp.down_proj.weight")
    save_file(weights, str(ckpt / "model.safetensors"), metadata={"format": "pt"})


def _extra_weight(ckpt: Path) -> None:
    weights = load_file(str(ckpt / "model.safetensors"))
    weights["model.layers.1.mlp.extra_proj.weight"] = torch.zeros(2, 2)
    save_file(weights, str(ckpt / "model.safetensors"), metadata={"format": "pt"})


def _system_turn(ckpt: Path) -> None:
    def edit(config):
        config["chat_template"] = "{{ '<|system|>You are helpful.<|end|>' }}" + config["chat_template"]
    _edit_json(ckpt / "tokenizer_config.json", edit)


def _no_audio_token(ckpt: Path) -> None:
    def edit(config):
        config.pop("audio_token")
        config["extra_special_tokens"].pop("audio_token")
    _edit_json(ckpt / "tokenizer_config.json", edit)


def _rank_64_tensors(ckpt: Path) -> None:
    file = ckpt / "speech-lora" / "adapter_model.safetensors"
    weights = load_file(str(file))
    save_file({k: (v[:64] if ".lora_A." in k else v[:, :64]).contiguous() for k, v in weights.items()}, str(file))


def _audio_features(**settings):
    def damage(ckpt: Path) -> None:
        _edit_json(ckpt / "processor_config.json", lambda config: config["audio_processor"].update(settings))
    return damage


def _untied(ckpt: Path) -> None:
    _edit_json(ckpt / "config.json", lambda config: config.update(tie_word_embeddings=False))


DAMAGES = {  # name: (damage, what load_base or attach_lora says, what apa check says)
    "missing weight": (_drop_weight, "1 weight(s) missing from the weight files (it would start from random values), "
                       "e.g. model.layers.1.mlp.down_proj.weight", "1 weight(s) missing from the weight files"),
    "unexpected weight": (_extra_weight, "1 weight(s) in the weight files but not in the model",
                          "1 weight(s) unexpected in the weight files"),
    "untied head": (_untied, "tie_word_embeddings=False (released: True)", "tie_word_embeddings=False"),
    "system turn": (_system_turn, "the chat template renders '<|system|>", "the chat template renders '<|system|>"),
    "no audio token": (_no_audio_token, "the tokenizer names no audio token", "the tokenizer names no audio token"),
    "8 kHz features": (_audio_features(sampling_rate=8000), "sampling_rate=8000 but the project's audio rate is 16000",
                       "sampling_rate=8000"),
    "compression 4": (_audio_features(audio_compression_rate=4),
                      "audio_compression_rate=4 but audio_config.time_reduction is 8", "audio_compression_rate=4"),
    "rank 64 under r=320": (_rank_64_tensors, "16 LoRA tensor(s) have rank 64, not the adapter config's r=320",
                            "16 LoRA tensor(s) have rank 64"),
}


@pytest.mark.parametrize("name", DAMAGES)
def test_a_damaged_checkpoint_is_refused_in_one_line_and_reported(name, tiny_path, tmp_path, capsys):
    damage, loading_says, check_says = DAMAGES[name]
    ckpt = Path(shutil.copytree(tiny_path, tmp_path / "ckpt"))
    damage(ckpt)
    cfg = compose_config("model=phi4mm", f"model.path={ckpt}", "model.revision=null", "model.dtype=float32",
                         "lora=pretrained_r320")
    with pytest.raises(UserError) as err:
        model, processor, path = load_base(cfg.model)
        attach_lora(model, cfg.lora, path, [], seed=0)
    assert loading_says in str(err.value) and "\n" not in str(err.value)
    capsys.readouterr()
    assert check_main([str(ckpt)]) == 1
    problems = [line for line in capsys.readouterr().out.splitlines() if line.startswith("PROBLEM")]
    assert any(check_says in line for line in problems), problems


def test_a_head_untied_where_the_config_ties_it_is_a_problem(tiny_path):
    from apa.checkpoint.layout import loaded_weight_problems

    model, _, _ = load_base(compose_config("model=phi4mm", f"model.path={tiny_path}", "model.revision=null",
                                           "model.dtype=float32").model)
    assert loaded_weight_problems(model, {}) == []
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    assert loaded_weight_problems(model, {}) == [
        "the LM head is separate from the embeddings but the config says tie_word_embeddings=True"]


def test_an_absent_processor_config_is_not_a_problem(tiny_path, tmp_path, capsys):
    """A folder written by transformers 4.5x may have no processor_config.json: it is optional."""
    ckpt = Path(shutil.copytree(tiny_path, tmp_path / "ckpt"))
    (ckpt / "processor_config.json").unlink()
    (ckpt / "preprocessor_config.json").write_text(json.dumps({"feature_extractor_type":
                                                               "Phi4MultimodalFeatureExtractor"}))
    assert check_main([str(ckpt)]) == 0, capsys.readouterr().out
    load_base(compose_config("model=phi4mm", f"model.path={ckpt}", "model.revision=null").model)
