"""The tokenizer tokenizes exactly as the checkpoint's tokenizer.json says, on both miniatures: the transformers 5
layout (model=tiny) and the released checkpoint's most likely one (model=tiny_released: gpt-4o's Split regex,
tokenizer_config.json naming GPT2Tokenizer)."""

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from apa.checkpoint.layout import load_processor
from apa.checkpoint.loading import ModelLoadError, load_base, resolve_model_path
from apa.checkpoint.tokenizer import O200K_PATTERN, tokenizer_file_problems
from apa.constants import CONF_DIR
from apa.data import SAMPLE_ROOT
from apa.data.labels import SkipReport
from apa.data.original import read_original_layout
from apa.sft.prompts import apa_target, format_answer, mdd_target
from tests.conftest import compose_config

MINIATURES = ("tiny", "tiny_released")


def _texts() -> list[str]:
    """The paper's prompts (and the project's others), digits, ranges and JSON answers."""
    from omegaconf import OmegaConf

    texts = [t for f in sorted((CONF_DIR / "prompts").glob("*.yaml")) for k, t in OmegaConf.load(f).items()
             if k in ("apa", "mdd")]
    texts += ["0 - 10", "9-10", "2023", "0 1 2 3 4 5 6 7 8 9 10", "a score of 10/10", "1,000 and 3.14"]
    for utt in read_original_layout(SAMPLE_ROOT, "train", SkipReport())[:3]:
        texts += [format_answer(apa_target(utt)), format_answer(mdd_target(utt))]
    return texts


@pytest.fixture(scope="module", params=MINIATURES)
def miniature(request):
    cfg = compose_config("experiment=demo", f"model={request.param}")
    return request.param, Path(resolve_model_path(cfg.model)), cfg


@pytest.mark.slow
def test_the_loaded_tokenizer_tokenizes_as_its_file_says(miniature):
    name, path, _ = miniature
    tokenizer = load_processor(str(path)).tokenizer
    on_file = Tokenizer.from_file(str(path / "tokenizer.json"))
    texts = _texts()
    assert len(texts) > 10 and any("accuracy" in t for t in texts)
    for text in texts:
        assert tokenizer(text, add_special_tokens=False).input_ids == on_file.encode(text).ids, text
    assert tokenizer.audio_token == "<|endoftext11|>" and tokenizer.image_token == "<|endoftext10|>"
    assert tokenizer.convert_tokens_to_ids(tokenizer.audio_token) == on_file.token_to_id("<|endoftext11|>")
    assert tokenizer_file_problems(tokenizer, str(path)) == []


def test_the_released_miniature_is_written_as_the_released_tokenizer_most_likely_is(miniature):
    name, path, _ = miniature
    layout = json.loads((path / "tokenizer.json").read_text())
    config = json.loads((path / "tokenizer_config.json").read_text())
    if name == "tiny":
        assert config["tokenizer_class"] == "TokenizersBackend" and layout["pre_tokenizer"]["type"] == "ByteLevel"
        return
    split, byte_level = layout["pre_tokenizer"]["pretokenizers"]
    assert (split["type"], split["pattern"]["Regex"]) == ("Split", O200K_PATTERN)
    assert (byte_level["type"], byte_level["use_regex"]) == ("ByteLevel", False)
    assert config["tokenizer_class"] == "GPT2Tokenizer" and "chat_template" in config
    assert config["extra_special_tokens"] == {"audio_token": "<|endoftext11|>", "image_token": "<|endoftext10|>"}
    assert {"vocab.json", "merges.txt"} <= {p.name for p in path.iterdir()}


def test_auto_tokenizer_would_tokenize_the_released_layout_otherwise_and_the_check_says_so(miniature):
    """What the loader avoids: AutoTokenizer rebuilds a GPT2Tokenizer with GPT-2's own pre-tokenizer. On the
    released layout the paper's prompt and a year tokenize differently, and the check names the pre-tokenizer."""
    from transformers import AutoTokenizer

    name, path, _ = miniature
    auto = AutoTokenizer.from_pretrained(str(path))
    on_file = Tokenizer.from_file(str(path / "tokenizer.json"))
    differing = [t for t in _texts() if auto(t, add_special_tokens=False).input_ids != on_file.encode(t).ids]
    problems = tokenizer_file_problems(auto, str(path))
    if name == "tiny":
        assert differing == [] and problems == []
        return
    assert "2023" in differing and any("pronunciation" in t for t in differing)
    assert problems == ["the loaded tokenizer's pre_tokenizer differs from tokenizer.json's (ByteLevel instead of "
                        "Sequence[Split, ByteLevel])"]


@pytest.mark.slow
def test_model_loading_refuses_a_tokenizer_unlike_its_file_in_one_line(monkeypatch):
    """Were the tokenizer built as AutoTokenizer builds it, training and evaluation would stop before any weight
    is loaded, naming the pre-tokenizer."""
    from transformers import AutoTokenizer

    import apa.checkpoint.tokenizer

    monkeypatch.setattr(apa.checkpoint.tokenizer, "load_tokenizer",
                        lambda path, revision=None: AutoTokenizer.from_pretrained(path, revision=revision))
    cfg = compose_config("experiment=demo", "model=tiny_released")
    with pytest.raises(ModelLoadError, match="pre_tokenizer differs from tokenizer.json's") as err:
        load_base(cfg.model)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_final_models_saved_tokenizer_equals_the_bases(miniature, tmp_path):
    from apa.checkpoint.loading import add_control_tokens

    name, path, cfg = miniature
    model, processor, _ = load_base(cfg.model)
    add_control_tokens(model, processor, 0)
    processor.save_pretrained(tmp_path / "final_model")
    saved = load_processor(str(tmp_path / "final_model")).tokenizer
    base = json.loads((path / "tokenizer.json").read_text())
    written = json.loads((tmp_path / "final_model" / "tokenizer.json").read_text())
    assert {k: written[k] for k in ("normalizer", "pre_tokenizer", "model")} == {
        k: base[k] for k in ("normalizer", "pre_tokenizer", "model")}
    on_file = Tokenizer.from_file(str(path / "tokenizer.json"))
    for text in _texts():
        assert saved(text, add_special_tokens=False).input_ids == on_file.encode(text).ids, text
    assert saved.audio_token == "<|endoftext11|>" and saved.chat_template == processor.tokenizer.chat_template
