"""The collator builds what the checkpoint's processor builds, while tokenizing prompts once and caching features."""

import pytest
import torch

from apa.checkpoint.loading import load_base
from apa.constants import SAMPLING_RATE
from apa.data import SAMPLE_ROOT
from apa.data.audio import decode_audio
from apa.data.sources import load_split
from apa.sft.collate import SpeechSFTCollator, chat_text
from apa.training.recipe import example_rows
from tests.conftest import compose_config


@pytest.fixture(scope="module")
def rows_and_processor():
    cfg = compose_config("experiment=demo")
    _, processor, _ = load_base(cfg.model)
    utts = load_split("local", str(SAMPLE_ROOT), "train", max_bad_fraction=0)[:6]
    rows = example_rows(utts, cfg.prompts, processor.tokenizer.audio_token)
    return rows, processor


def _processor_batch(processor, rows, for_generation=False):
    processor.tokenizer.padding_side = "left" if for_generation else "right"
    texts = [chat_text(processor, r["user_content"], None if for_generation else r["answer"]) for r in rows]
    audio = [decode_audio(r["audio_path"]) for r in rows]
    return processor(text=texts, audio=audio, sampling_rate=SAMPLING_RATE, return_tensors="pt", padding=True)


@pytest.mark.slow
def test_batches_equal_the_processors_output(rows_and_processor):
    rows, processor = rows_and_processor
    rows = rows[::-1]  # clips of different lengths next to each other: padding in text and in audio
    ours = SpeechSFTCollator(processor)(rows)
    reference = _processor_batch(processor, rows)
    assert set(ours) == set(reference) | {"labels"}
    for key in ("input_ids", "attention_mask", "audio_embed_sizes", "audio_attention_mask"):
        assert ours[key].dtype == reference[key].dtype, key
        assert torch.equal(ours[key], reference[key]), key
    valid = reference["audio_attention_mask"]
    assert len(set(valid.sum(1).tolist())) > 1  # the batch really pads audio
    ours_features, their_features = ours["audio_input_features"], reference["audio_input_features"]
    assert ours_features.shape == their_features.shape and ours_features.dtype == their_features.dtype
    assert torch.equal(ours_features[valid], their_features[valid])  # every valid frame, bit for bit
    assert (ours_features[~valid] == 0).all()
    # the processor's padded frames differ only where a frame (hop 160 samples) still overlaps the clip's tail
    hop = processor.audio_processor.hop_length
    for i, (row, n) in enumerate(zip(rows, valid.sum(1).tolist(), strict=True)):
        samples = len(decode_audio(row["audio_path"]))
        differing = (their_features[i, n:] != 0).any(-1).nonzero().flatten() + n
        assert all(frame * hop < samples for frame in differing.tolist()), (i, differing)


@pytest.mark.slow
def test_generation_inputs_equal_the_processors_left_padded_prompts(rows_and_processor):
    rows, processor = rows_and_processor
    rows = rows[::-1]
    ours = SpeechSFTCollator(processor).generation_inputs(rows)
    reference = _processor_batch(processor, rows, for_generation=True)
    assert set(ours) == set(reference)
    for key in ("input_ids", "attention_mask", "audio_embed_sizes", "audio_attention_mask"):
        assert torch.equal(ours[key], reference[key]), key
    assert (reference["attention_mask"][:, 0] == 0).any()  # some rows really are left-padded
    valid = reference["audio_attention_mask"]
    assert torch.equal(ours["audio_input_features"][valid], reference["audio_input_features"][valid])
    # decoded audio passed in gives the same inputs as the rows' files
    again = SpeechSFTCollator(processor).generation_inputs(rows, [decode_audio(r["audio_path"]) for r in rows])
    assert all(torch.equal(ours[k], again[k]) for k in ours)


def test_a_single_example_has_no_audio_mask_like_the_processor(rows_and_processor):
    rows, processor = rows_and_processor
    ours, reference = SpeechSFTCollator(processor)(rows[:1]), _processor_batch(processor, rows[:1])
    assert "audio_attention_mask" not in ours and "audio_attention_mask" not in reference
    assert torch.equal(ours["input_ids"], reference["input_ids"])
    assert torch.equal(ours["audio_input_features"], reference["audio_input_features"])


def test_prompts_are_tokenized_once_and_features_are_cached(rows_and_processor):
    rows, processor = rows_and_processor
    collate = SpeechSFTCollator(processor)
    first = collate(rows)
    assert len(collate.tokens._prompts) == 2  # one prompt per task, however many examples
    clips = {r["audio_path"] for r in rows}
    assert set(collate.features._cache) == clips  # APA and MDD rows of a clip share its features
    cached = {path: item[0] for path, item in collate.features._cache.items()}
    again = collate(rows)
    assert all(collate.features._cache[p][0] is t for p, t in cached.items())  # served from the cache
    assert all(torch.equal(first[k], again[k]) for k in first)


@pytest.mark.slow
def test_the_feature_cache_stays_within_its_budget(rows_and_processor):
    rows, processor = rows_and_processor
    one_clip_mb = SpeechSFTCollator(processor).features(rows[0]["audio_path"])[0].nbytes / 2**20
    collate = SpeechSFTCollator(processor, feature_cache_mb=2.5 * one_clip_mb)
    reference = SpeechSFTCollator(processor, feature_cache_mb=0)
    for row in rows:
        batch = collate([row])
        assert collate.features.used <= collate.features.budget
        assert torch.equal(batch["audio_input_features"], reference([row])["audio_input_features"])
    assert 1 <= len(collate.features._cache) <= 2
    assert len(reference.features._cache) == 0


def test_a_prompt_without_its_audio_placeholder_is_refused(rows_and_processor):
    rows, processor = rows_and_processor
    row = {**rows[0], "user_content": rows[0]["user_content"].replace(processor.tokenizer.audio_token, "")}
    with pytest.raises(ValueError, match="exactly one audio placeholder"):
        SpeechSFTCollator(processor)([row])
