"""Targets are what the annotators heard; the parser reads what models actually write."""

import json
from pathlib import Path

import pytest

from apa.data import SAMPLE_ROOT
from apa.data.labels import SkipReport
from apa.data.original import read_original_layout
from apa.sft.prompts import build_examples, parse_apa, parse_mdd

INSTRUCTIONS = {"apa": "{audio}Rate.", "mdd": "{audio}Transcribe."}


@pytest.fixture(scope="module")
def utterances():
    return {u.id: u for u in read_original_layout(SAMPLE_ROOT, "train", SkipReport())}


def test_two_examples_per_utterance_with_control_token_and_audio(utterances):
    apa, mdd = build_examples(utterances["000010011"], INSTRUCTIONS, "<AUD>")
    assert apa.user_content == "<|APA|><AUD>Rate." and mdd.user_content == "<|MDD|><AUD>Transcribe."
    assert json.loads(apa.answer) == {"accuracy": 8, "fluency": 9, "prosodic": 9, "total": 8}
    assert json.loads(mdd.answer) == {"word_transcript": "WE CALL IT BEAR",
                                      "phoneme_transcript": "W IY K AO L IH T B EH R"}


def test_mdd_target_applies_the_annotated_mispronunciation(utterances):
    # THEME: canonical TH IY0 M, annotators heard AH for IY (index 1)
    _, mdd = build_examples(utterances["000010113"], INSTRUCTIONS, "<AUD>")
    phones = json.loads(mdd.answer)["phoneme_transcript"].split()
    assert phones[11:14] == ["TH", "AH", "M"]
    assert utterances["000010113"].canonical_phones[11:14] == ["TH", "IY", "M"]
    assert not any(ch.isdigit() for ch in "".join(phones))


@pytest.mark.parametrize(
    "raw",
    [
        '{"accuracy": 7, "fluency": 8, "prosodic": 6, "total": 7}',
        "{'accuracy': 7, 'fluency': 8, 'prosodic': 6, 'total': 7}",
        '```json\n{"accuracy": 7, "fluency": 8, "prosodic": 6, "total": 7}\n```',
        'Scores: {"accuracy": 7, "fluency": "8", "prosodic": 6.0, "total": 7} hope this helps',
    ],
)
def test_parse_apa_accepts_json_variants(raw):
    assert parse_apa(raw) == {"accuracy": 7, "fluency": 8, "prosodic": 6, "total": 7}


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "no json here",
        '{"accuracy": 11, "fluency": 8, "prosodic": 6, "total": 7}',
        '{"accuracy": -1, "fluency": 8, "prosodic": 6, "total": 7}',
        '{"accuracy": "good", "fluency": 8, "prosodic": 6, "total": 7}',
        '{"accuracy": 7, "fluency": 8, "prosodic": 6}',
        '{"accuracy": 7, "fluency": 8, "prosodic": 6, "total": 7',
    ],
)
def test_parse_apa_rejects_malformed_or_out_of_range(raw):
    assert parse_apa(raw) is None


@pytest.mark.parametrize(
    "raw",
    [
        '{"word_transcript": "WE CALL", "phoneme_transcript": "W IY  K AO L"}',
        "{'word transcript': 'WE CALL', 'phoneme transcript': 'W IY K AO L'}",
    ],
)
def test_parse_mdd_accepts_both_key_spellings(raw):
    assert parse_mdd(raw) == {"word_transcript": "WE CALL", "phoneme_transcript": "W IY K AO L"}


@pytest.mark.parametrize(
    ("words", "raw"),
    [("{", '{"word_transcript": "{", "phoneme_transcript": "W IY"}'),
     ("A } B", "{'word_transcript': 'A } B', 'phoneme_transcript': 'W IY'}"),
     ("SAY ```HI```", 'Answer: {"word_transcript": "SAY ```HI```", "phoneme_transcript": "W IY"} done'),
     ('SAY "}"', '```json\n{"word_transcript": "SAY \\"}\\"", "phoneme_transcript": "W IY"}\n```')],
    ids=["open brace", "close brace, single quotes", "fence inside the transcript", "quoted brace in a fence"],
)
def test_braces_and_fences_inside_a_transcript_do_not_hide_the_answer(words, raw):
    # found by tests/test_properties.py: braces were counted inside strings, and a fence inside a transcript was
    # taken for the answer's fence; both answers were unparsed
    assert parse_mdd(raw) == {"word_transcript": words, "phoneme_transcript": "W IY"}


def test_parse_mdd_rejects_missing_keys():
    assert parse_mdd('{"word_transcript": "WE"}') is None


def test_unk_in_a_target_survives_tokenisation_and_decoding_as_generation_does(utterances):
    """`<unk>` is ordinary text to Phi-4's tokenizer (its special tokens are the `<|...|>` markers), so decoding with
    skip_special_tokens keeps it; the tiny tokenizer is built the same way (tokens `<`, `unk`, `>`)."""
    from apa.checkpoint.layout import load_processor
    from apa.checkpoint.tiny import TinySpec, ensure_tiny_checkpoint
    from apa.constants import END_TOKEN
    from apa.sft.generation import decode_answer

    tokenizer = load_processor(str(ensure_tiny_checkpoint(TinySpec()))).tokenizer
    assert "<unk>" not in tokenizer.all_special_tokens and "<unk>" not in tokenizer.get_added_vocab()
    assert len(tokenizer.tokenize(" <unk>")) > 1  # byte-level BPE pieces, not one (special) token
    answer = '{"word_transcript": "WE CALL IT BEAR", "phoneme_transcript": "W <unk> K AO* L IH T B EH R"}'
    ids = tokenizer(answer + END_TOKEN, add_special_tokens=False).input_ids  # what the model generates, <|end|> last
    decoded = decode_answer(tokenizer, ids)
    assert decoded == answer
    assert parse_mdd(decoded)["phoneme_transcript"].split()[1] == "<unk>"


@pytest.mark.parametrize("task", ["apa", "mdd"])
def test_the_paper_prompts_render_as_printed_with_a_newline_after_the_audio(task):
    """prompts=paper: control token, audio placeholder, a newline (as the official fine-tuning script writes its user
    turn), then Appendix 7's text character for character, blank lines included."""
    from omegaconf import OmegaConf

    from apa.constants import CONF_DIR
    from apa.sft.prompts import user_content

    prompts = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "prompts" / "paper.yaml"))
    printed = (Path(__file__).parent / "paper_prompts" / f"{task}.txt").read_text().removesuffix("\n")
    control = {"apa": "<|APA|>", "mdd": "<|MDD|>"}[task]
    assert user_content(task, prompts, "<|audio|>") == f"{control}<|audio|>\n{printed}"
    assert printed.count("\n\n") == {"apa": 5, "mdd": 2}[task] and "\n\n\n" not in printed
