"""Loading guards, control tokens, label masking and adapter initialisation on the real tiny checkpoint."""

import json

import pytest
import torch
from peft.utils import load_peft_weights

from apa.checkpoint.loading import ModelLoadError, add_control_tokens, attach_lora, check_checkpoint, load_base
from apa.data import SAMPLE_ROOT
from apa.data.labels import SkipReport
from apa.data.original import read_original_layout
from apa.sft.collate import IGNORE_INDEX, SpeechSFTCollator
from apa.sft.prompts import build_examples


@pytest.fixture(scope="module")
def base(request):
    from tests.conftest import compose_config

    cfg = compose_config("experiment=demo")
    return cfg, *load_base(cfg.model)


def test_remote_code_checkpoint_is_refused_with_the_fix(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "phi4mm", "auto_map": {"AutoConfig": "configuration_phi4mm.Phi4MMConfig"},
         "speech_lora": {"r": 320}}))
    with pytest.raises(ModelLoadError, match="remote_code.*refs/pr/70.*convert_phi4_multimodal_weights_to_hf"):
        check_checkpoint(str(tmp_path))


def test_missing_model_path_names_the_fix(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist") as refused:
        check_checkpoint(str(tmp_path / "no-such-model"))
    assert ("`hf download microsoft/Phi-4-multimodal-instruct --revision refs/pr/70 --local-dir <dir>`"
            in str(refused.value))  # the installed huggingface_hub's command (no huggingface-cli), at the revision


@pytest.mark.slow
def test_tiny_checkpoint_has_the_native_layout(base):
    _, _, processor, path = base
    from pathlib import Path

    files = {p.name for p in Path(path).iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json", "speech-lora"} <= files
    adapter = json.loads((Path(path) / "speech-lora" / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"], adapter["lora_dropout"]) == (320, 640, 0.01)
    assert adapter["target_modules"] == r"model.layers.\d+.((self_attn.(qkv|o)_proj)|(mlp.(gate_up|down)_proj))"
    for token in ("<|user|>", "<|assistant|>", "<|end|>", "<|endoftext|>", processor.tokenizer.audio_token):
        assert token in processor.tokenizer.get_vocab()


@pytest.mark.slow
def test_control_tokens_are_distinct_and_reproducible():
    from tests.conftest import compose_config

    cfg = compose_config("experiment=demo")
    rows = []
    for seed in (42, 42, 7):
        model, processor, _ = load_base(cfg.model)
        ids = add_control_tokens(model, processor, seed)
        assert processor.tokenizer.convert_ids_to_tokens(ids) == ["<|APA|>", "<|MDD|>"]
        rows.append(model.get_input_embeddings().weight[ids].detach().clone())
    assert torch.equal(rows[0], rows[1]) and not torch.equal(rows[0], rows[2])
    assert not torch.allclose(rows[0][0], rows[0][1])


@pytest.mark.slow
def test_labels_cover_exactly_the_answer(base):
    cfg, _, processor, _ = base
    utts = read_original_layout(SAMPLE_ROOT, "train", SkipReport())[:3]
    rows = [vars(e) for u in utts for e in build_examples(u, {"apa": cfg.prompts.apa, "mdd": cfg.prompts.mdd},
                                                          processor.tokenizer.audio_token)]
    batch = SpeechSFTCollator(processor)(rows)
    tok = processor.tokenizer
    for i, row in enumerate(rows):
        learned = batch["input_ids"][i][batch["labels"][i] != IGNORE_INDEX].tolist()
        expected = tok(row["answer"], add_special_tokens=False)["input_ids"] + tok.convert_tokens_to_ids(
            ["<|end|>", "<|endoftext|>"])
        assert learned == expected
        # learned tokens are one contiguous block at the end of the real (unpadded) sequence
        positions = (batch["labels"][i] != IGNORE_INDEX).nonzero().flatten()
        assert positions[-1] == batch["attention_mask"][i].sum() - 1
        assert positions[-1] - positions[0] + 1 == len(expected)
    assert (batch["labels"][batch["input_ids"] == processor.audio_token_id] == IGNORE_INDEX).all()
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()


@pytest.mark.slow
def test_pretrained_r320_starts_from_the_adapter_on_disk_bit_for_bit(base):  # any spelling: test_layout.py
    cfg, model, processor, path = base
    from tests.conftest import compose_config

    lora = compose_config("lora=pretrained_r320").lora
    ids = add_control_tokens(model, processor, 42)
    peft_model = attach_lora(model, lora, path, ids, seed=42)
    on_disk = load_peft_weights(f"{path}/speech-lora")
    state = {k: v for k, v in peft_model.state_dict().items() if "lora_" in k}
    assert len(state) == len(on_disk) > 0
    for key, value in on_disk.items():  # converter-style keys (no base_model.model. prefix), bf16 on disk
        live = state[f"base_model.model.{key}".replace(".weight", ".default.weight")]
        assert torch.equal(live, value.to(live.dtype))
    assert any(v.abs().sum() > 0 for k, v in on_disk.items() if "lora_B" in k)  # a real, non-zero adapter
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["nan", "rank"])
def test_an_adapter_that_diverged_or_does_not_fit_its_config_is_one_line(tmp_path, damage):
    """An adapter trained to NaN (learning rate too high) answered `!!!!…` as if untrained; an adapter_config.json
    edited to another rank was a 50-line size-mismatch traceback: both are named before any answer."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file, save_file

    from apa.checkpoint.adapters import put_adapter
    from apa.errors import UserError
    from tests.conftest import compose_config

    cfg = compose_config("experiment=demo")
    model, _, _ = load_base(cfg.model)
    if hasattr(model, "peft_config"):  # the converter-style speech LoRA: put a new adapter on the bare base
        model = model.get_base_model()
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["o_proj"]))
    adapter = tmp_path / "adapter"
    lora.save_pretrained(adapter)
    if damage == "nan":
        weights = load_file(adapter / "adapter_model.safetensors")
        first = sorted(weights)[0]
        weights[first] = torch.full_like(weights[first], float("nan"))
        save_file(weights, adapter / "adapter_model.safetensors")
        expected = "holds NaN or infinite weights"
    else:
        config = json.loads((adapter / "adapter_config.json").read_text())
        (adapter / "adapter_config.json").write_text(json.dumps({**config, "r": 8}))
        expected = "adapter_config.json does not fit its weights (size mismatch"
    fresh, _, _ = load_base(cfg.model)
    if hasattr(fresh, "peft_config"):
        fresh = fresh.get_base_model()
    with pytest.raises(UserError, match=expected.replace("(", r"\(")):
        put_adapter(fresh, adapter)
