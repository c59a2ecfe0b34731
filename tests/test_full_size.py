"""model=phi4mm_random: the full-size architecture from the real config numbers, checked on the meta device."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from apa.constants import END_TOKEN, ENDOFTEXT_TOKEN
from apa.full_size import build_model, full_size_config
from apa.modeling import parameter_report

IDS = {ENDOFTEXT_TOKEN: 199999, END_TOKEN: 200020, "audio": 200011, "image": 200010}  # the real checkpoint's ids


@pytest.fixture(scope="module")
def config():
    return full_size_config(IDS)


def test_full_size_base_has_4_744_b_parameters_in_the_real_split(config):
    report = parameter_report(build_model(config, "meta"))
    groups = {g: c["total"] for g, c in report["groups"].items()}
    assert round(report["total"] / 1e9, 3) == 4.744
    assert round(groups["language_model"] / 1e9, 3) == 3.836  # tied embeddings counted once
    assert round((groups["audio_encoder"] + groups["audio_projector"]) / 1e9, 3) == 0.466
    assert round(groups["vision"] / 1e9, 3) == 0.442


@pytest.mark.parametrize(("lora", "expected_millions"), [("pretrained_r320", 461.4), ("paper_r64", 92.3)])
def test_speech_lora_sizes_match_the_real_adapter(config, make_config, lora, expected_millions):
    cfg = make_config(f"lora={lora}", "model=phi4mm_random")
    peft_config = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                             target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")
    with torch.device("meta"):  # the LoRA matrices too: 461 M parameters need not be allocated to be counted
        model = get_peft_model(build_model(config, "meta"), peft_config)
    report = parameter_report(model)
    assert round(report["groups"]["lora"]["total"] / 1e6, 1) == expected_millions
    assert report["trainable"] == report["groups"]["lora"]["total"]  # everything else frozen
