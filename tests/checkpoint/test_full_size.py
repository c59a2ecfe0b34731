"""model=phi4mm_random: the released config converted as transformers converts it, checked on the meta device
against facts stated independently of the converter (the released config.json's published values)."""

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model

from apa.checkpoint.full_size import RANDOM_MARKER, build_model, ensure_random_checkpoint
from apa.checkpoint.layout import REAL_TOKEN_IDS, released_config
from apa.checkpoint.loading import parameter_report

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out

LONG_FACTOR_ENDS = (1, 1.118320672, 44.16, 47.77)  # first two and last two of the 48 published long factors


@pytest.fixture(scope="module")
def config():
    return released_config()


def test_full_size_base_has_exactly_the_converted_parameter_count(config):
    report = parameter_report(build_model(config, "meta"))
    groups = {g: c["total"] for g, c in report["groups"].items()}
    assert report["total"] == 4_743_988_032
    assert round(groups["language_model"] / 1e9, 3) == 3.836  # tied embeddings counted once
    assert round((groups["audio_encoder"] + groups["audio_projector"]) / 1e9, 3) == 0.466
    assert round(groups["vision"] / 1e9, 3) == 0.442


def test_converted_config_has_the_released_values(config):
    text = {"hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 32, "num_attention_heads": 24,
            "num_key_value_heads": 8, "vocab_size": 200064, "tie_word_embeddings": True, "rms_norm_eps": 1e-5,
            "max_position_embeddings": 131072, "original_max_position_embeddings": 4096, "sliding_window": 262144,
            "bos_token_id": 199999, "pad_token_id": 199999, "eos_token_id": [199999, 200020]}
    assert {k: getattr(config, k) for k in text} == text
    rope = config.rope_parameters
    assert (rope["rope_type"], rope["partial_rotary_factor"], rope["rope_theta"]) == ("longrope", 0.75, 10000.0)
    assert rope["short_factor"] == [1.0] * 48 and len(rope["long_factor"]) == 48
    assert (*rope["long_factor"][:2], *rope["long_factor"][-2:]) == LONG_FACTOR_ENDS
    audio = {"hidden_size": 1024, "num_attention_heads": 16, "intermediate_size": 1536, "num_blocks": 24,
             "kernel_size": 3, "nemo_conv_channels": 1024, "depthwise_separable_out_channel": 1024,
             "ext_pw_out_channel": 1024, "time_reduction": 8, "left_chunk": 18, "input_size": 80,
             "bias_max_distance": 500, "downsample_rate": 1, "audio_token_id": 200011}
    assert {k: getattr(config.audio_config, k) for k in audio} == audio
    assert (config.vision_config.crop_size, config.vision_config.image_token_id) == (448, 200010)
    # longrope's attention scaling (~1.19 for 131072/4096), which the default rope (1.0) lacks
    with torch.device("meta"):
        from transformers.models.phi4_multimodal.modeling_phi4_multimodal import Phi4MultimodalRotaryEmbedding

        scaling = Phi4MultimodalRotaryEmbedding(config).attention_scaling
    assert scaling == pytest.approx(1.1902, abs=1e-4)


def test_random_checkpoint_config_is_the_converted_config_with_real_token_ids(tmp_path, config):
    from transformers import AutoConfig

    from apa.checkpoint.layout import load_processor, token_problems

    folder = ensure_random_checkpoint(tmp_path)
    written = json.loads((folder / "config.json").read_text())
    assert written.pop(RANDOM_MARKER) is True
    loaded = AutoConfig.from_pretrained(folder)
    saved, converted = loaded.to_diff_dict(), config.to_diff_dict()
    assert saved.pop(RANDOM_MARKER) is True and saved.pop("dtype") == "bfloat16"  # torch_dtype of the release
    converted.pop("dtype", None)
    assert saved == converted
    processor = load_processor(str(folder))
    assert token_problems(loaded, processor.tokenizer) == []
    tok = processor.tokenizer
    assert (tok.audio_token_id, tok.image_token_id) == (REAL_TOKEN_IDS["audio"], REAL_TOKEN_IDS["image"])
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|end|>"]) == [199999, 200020]


@pytest.mark.parametrize(("lora", "expected_millions"), [("pretrained_r320", 461.4), ("fresh_r64", 92.3)])
def test_speech_lora_sizes_match_the_real_adapter(config, make_config, lora, expected_millions):
    cfg = make_config(f"lora={lora}", "model=phi4mm_random")
    peft_config = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                             target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")
    with torch.device("meta"):  # the LoRA matrices too: 461 M parameters need not be allocated to be counted
        model = get_peft_model(build_model(config, "meta"), peft_config)
    report = parameter_report(model)
    assert round(report["groups"]["lora"]["total"] / 1e6, 1) == expected_millions
    assert report["trainable"] == report["groups"]["lora"]["total"]  # everything else frozen
