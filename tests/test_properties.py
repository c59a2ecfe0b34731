"""Property-based tests (Hypothesis; issue 12, item 7): the corpus parser, the answer parsers and the metrics never
crash on any input, and keep their invariants (PER(x, x) = 0, alignments that reproduce both sequences at the
Levenshtein cost, MDD counts that add up)."""

from __future__ import annotations

import copy
import json
import math
import unicodedata

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from apa.data.labels import LabelMismatch, SkipReport, parse_labels, read_entry
from apa.data.records import APA_ASPECTS, PHONES, UNKNOWN_PHONE, strip_stress
from apa.evaluation.predictions import metrics_json
from apa.metrics import (
    EPS,
    align,
    compute_metrics,
    error_rate,
    kaldi_align,
    mdd_counts,
    mdd_outcomes,
    normalise_phones,
    normalise_words,
)
from apa.sft.prompts import format_answer, parse_apa, parse_mdd

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out

# database=None: Hypothesis keeps no .hypothesis/ folder in the checkout (the tests write nothing there)
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
SLOWER = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)

# What read_entry turns into a counted skip ("bad labels"); anything else escaping parse_labels would be a crash.
LABEL_ERRORS = (KeyError, TypeError, ValueError)

# ---------------------------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers(-20, 20) | st.integers() | st.floats() | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
canonical_phones = st.builds(lambda p, stress: p + stress, st.sampled_from(sorted(PHONES)),
                             st.sampled_from(["", "", "0", "1", "2"]))
pronounced_phones = (canonical_phones | st.sampled_from(["<unk>", "<DEL>", "<del>"])
                     | st.sampled_from(sorted(PHONES)).map(lambda p: p + "*"))
word_texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=10)
# a sentence with something left after NFC and strip
scores = st.integers(0, 10)


@st.composite
def words(draw):
    phones = draw(st.lists(canonical_phones, min_size=1, max_size=6))
    indices = draw(st.lists(st.integers(0, len(phones) - 1), unique=True, max_size=len(phones)))
    mis = [{"index": i,
            # the canonical-phone as annotated: stress digit or not, it must name phones[i]
            "canonical-phone": draw(st.sampled_from([phones[i], strip_stress(phones[i])])),
            "pronounced-phone": draw(pronounced_phones)} for i in indices]
    return {"text": draw(word_texts), "phones": phones, "mispronunciations": mis,
            "accuracy": draw(scores), "stress": 10, "total": draw(scores)}  # extra fields are ignored


@st.composite
def entries(draw):
    entry = {aspect: draw(scores | scores.map(float)) for aspect in APA_ASPECTS}
    listed = draw(st.lists(words(), min_size=1, max_size=5))
    # well formed: the words spell the text (whatever their characters), and the text is not blank
    text = " ".join(w["text"] for w in listed)
    assume(unicodedata.normalize("NFC", text).strip())
    entry.update(text=text, completeness=draw(st.floats(0, 10)), words=listed)
    return entry


def _paths(node, prefix=()):
    """Every place in a JSON value: (path of keys and indices) for each field and item, at any depth."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield (*prefix, key)
        yield from _paths(child, (*prefix, key))


@st.composite
def mutated_entries(draw):
    """A well-formed entry with one field, at any depth, replaced by any JSON value or deleted. The field is drawn
    by its kind first (`words.*.mispronunciations.*.index` is as likely as `accuracy`), then which one."""
    entry = copy.deepcopy(draw(entries()))
    by_kind: dict[tuple, list[tuple]] = {}
    for path in _paths(entry):
        by_kind.setdefault(tuple("*" if isinstance(k, int) else k for k in path), []).append(path)
    path = draw(st.sampled_from(by_kind[draw(st.sampled_from(sorted(by_kind, key=str)))]))
    *parents, key = path
    node = entry
    for k in parents:
        node = node[k]
    if draw(st.integers(0, 4)) == 0:
        del node[key]  # a missing field, or a list one item shorter
    else:
        node[key] = draw(json_scalars | json_values)  # scalars as often as containers
    return entry


# ---------------------------------------------------------------------------------------------------------------
# Corpus parser
# ---------------------------------------------------------------------------------------------------------------


def _parse_or_label_error(entry):
    try:
        return parse_labels("u1", entry, "spk", "a.wav")
    except LABEL_ERRORS:
        return None


@FAST
@given(json_values | st.dictionaries(st.sampled_from([*APA_ASPECTS, "text", "words"]) | st.text(max_size=5),
                                     json_values, max_size=7))
def test_parse_labels_raises_only_what_readers_count_as_bad_labels_on_any_json(entry):
    _parse_or_label_error(entry)


def _one_mispronunciation(**fields):
    mis = {"index": 0, "canonical-phone": "K", "pronounced-phone": "G", **fields}
    return {"accuracy": 7, "fluency": 7, "prosodic": 7, "total": 7, "text": "CAT",
            "words": [{"text": "CAT", "phones": ["K", "AE1", "T"], "mispronunciations": [mis]}]}


@FAST
@given(mutated_entries())
# found by this property (before the fix: AttributeError, OverflowError)
@example(_one_mispronunciation(**{"pronounced-phone": None}))
@example(_one_mispronunciation(**{"pronounced-phone": 5}))
@example(_one_mispronunciation(index=float("inf")))
def test_parse_labels_raises_only_what_readers_count_as_bad_labels_on_any_damaged_entry(entry):
    utt = _parse_or_label_error(entry)
    if utt is not None:  # whatever is accepted is well-formed
        assert all(type(v) is int and 0 <= v <= 10 for v in utt.scores.values())
        assert utt.text and all(w.phones for w in utt.words)
        assert len(utt.phone_truth) == len(utt.canonical_phones)


@FAST
@given(mutated_entries())
@example(_one_mispronunciation(**{"pronounced-phone": None}))
@example(_one_mispronunciation(index=float("inf")))
def test_read_entry_skips_and_counts_every_entry_it_cannot_read(entry):
    report = SkipReport()
    utt = read_entry("u1", entry, "spk", "a.wav", report, on_label_mismatch="skip")
    assert (utt is None) == (report.skipped == 1)
    assert report.ids == ([] if utt else ["u1"])


@FAST
@given(entries())
def test_a_well_formed_entry_round_trips(entry):
    utt = parse_labels("u1", entry, "spk", "a.wav")
    assert utt.scores == {aspect: int(entry[aspect]) for aspect in APA_ASPECTS}
    assert all(type(v) is int for v in utt.scores.values())
    # the text as read: NFC, no invisible format characters, whitespace runs made one space, nothing else changed
    visible = [c for c in unicodedata.normalize("NFC", entry["text"]) if unicodedata.category(c) != "Cf"]
    assert utt.text == " ".join(utt.text.split()) and "".join(utt.text.split()) == "".join("".join(visible).split())
    assert [w.text for w in utt.words] == [w["text"] for w in entry["words"]]
    assert [w.phones for w in utt.words] == [tuple(w["phones"]) for w in entry["words"]]
    for word, raw in zip(utt.words, entry["words"], strict=True):
        assert [(m.index, m.canonical, m.pronounced) for m in word.mispronunciations] == [
            (m["index"], strip_stress(m["canonical-phone"]),
             "<del>" if m["pronounced-phone"] in ("<DEL>", "<del>") else strip_stress(m["pronounced-phone"]))
            for m in raw["mispronunciations"]]
        truth = word.phone_truth()
        for m in word.mispronunciations:
            assert truth[m.index] == m.pronounced
    assert len(utt.phone_truth) == len(utt.canonical_phones) == sum(len(w["phones"]) for w in entry["words"])


not_integral = (st.floats().filter(lambda x: not x.is_integer()) | st.booleans() | st.text(max_size=3)
                | st.none() | st.lists(st.integers(0, 2), max_size=1))
not_text = st.none() | st.booleans() | st.integers() | st.floats() | st.lists(st.text(max_size=2), max_size=2)


@FAST
@given(entries(), st.data(), st.sampled_from(["index", "pronounced-phone", "canonical-phone", "word text",
                                               "sentence", "score"]))
def test_a_field_of_the_wrong_type_is_refused_never_coerced(entry, data, field):
    # before: index 1.5 -> 1 and true -> 1, a sentence or word text 5 -> "5", a canonical-phone 5 -> "5"
    word = data.draw(st.sampled_from(entry["words"]))
    if field in ("index", "pronounced-phone", "canonical-phone"):
        if not word["mispronunciations"]:
            word["mispronunciations"] = [{"index": 0, "canonical-phone": word["phones"][0], "pronounced-phone": "AH"}]
        mis = data.draw(st.sampled_from(word["mispronunciations"]))
        mis[field] = data.draw(not_integral if field == "index" else not_text)
    elif field == "word text":
        word["text"] = data.draw(not_text)
    elif field == "sentence":
        entry["text"] = data.draw(not_text)
    else:
        entry[data.draw(st.sampled_from(APA_ASPECTS))] = data.draw(not_integral)
    try:
        parse_labels("u1", entry, "spk", "a.wav")
    except (TypeError, ValueError):
        pass
    else:
        raise AssertionError(f"{field} of the wrong type was accepted")


@FAST
@given(entries(), st.data())
def test_a_mispronunciation_pointing_at_another_phone_is_a_label_mismatch(entry, data):
    word = data.draw(st.sampled_from(entry["words"]))
    index = data.draw(st.integers(0, len(word["phones"]) - 1))
    other = data.draw(st.sampled_from(sorted(PHONES - {strip_stress(word["phones"][index])})))
    word["mispronunciations"] = [{"index": index, "canonical-phone": other, "pronounced-phone": "AH"}]
    try:
        parse_labels("u1", entry, "spk", "a.wav")
    except LabelMismatch as e:
        assert f"mispronunciation index {index} points at" in str(e)
    else:
        raise AssertionError("a mismatching index was accepted")


# ---------------------------------------------------------------------------------------------------------------
# Answer parsers
# ---------------------------------------------------------------------------------------------------------------

apa_targets = st.fixed_dictionaries({aspect: scores for aspect in APA_ASPECTS})
mdd_targets = st.fixed_dictionaries({
    "word_transcript": st.text(max_size=40).map(str.strip),
    "phoneme_transcript": st.lists(st.sampled_from(sorted(PHONES | {UNKNOWN_PHONE})), max_size=12).map(" ".join),
})
answer_keys = st.sampled_from([*APA_ASPECTS, "Accuracy", " fluency ", "prosody", "word_transcript",
                               "phoneme_transcript", "word transcript", "phone_transcript"]) | st.text(max_size=6)
answer_like = st.dictionaries(answer_keys, json_values | st.integers(0, 10).map(str), max_size=6)
# text around an answer with no brace or backtick: it cannot hold an object or a fence of its own
noise = st.text(st.characters(exclude_characters="{}`", exclude_categories=("Cs",)), max_size=30)


def _well_formed_apa(result) -> bool:
    return result is None or (list(result) == list(APA_ASPECTS)
                              and all(type(v) is int and 0 <= v <= 10 for v in result.values()))


def _well_formed_mdd(result) -> bool:
    return result is None or (set(result) == {"word_transcript", "phoneme_transcript"}
                              and all(isinstance(v, str) for v in result.values()))


@FAST
@given(st.text() | answer_like.map(json.dumps) | answer_like.map(repr)
       | st.tuples(noise, answer_like.map(json.dumps), noise).map("".join))
def test_answer_parsers_never_crash_and_give_none_or_a_well_formed_answer(raw):
    assert _well_formed_apa(parse_apa(raw))
    assert _well_formed_mdd(parse_mdd(raw))


@FAST
@given(apa_targets, mdd_targets)
def test_a_formatted_target_parses_back_exactly(apa, mdd):
    assert parse_apa(format_answer(apa)) == apa
    assert parse_mdd(format_answer(mdd)) == mdd


@FAST
@given(apa_targets, mdd_targets, noise, noise, st.sampled_from(["", "```json\n", "```\n", "``` json "]))
def test_noise_and_code_fences_around_a_valid_answer_still_parse(apa, mdd, before, after, fence):
    def wrap(answer):
        return before + fence + answer + ("\n```" if fence else "") + after

    assert parse_apa(wrap(format_answer(apa))) == apa
    assert parse_mdd(wrap(format_answer(mdd))) == mdd


# ---------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------

small_alphabet = st.sampled_from(["AH", "B", "K", "T", "<unk>"])
tokens = small_alphabet | st.text(st.characters(exclude_categories=("Cs", "Zs", "Cc", "Zl", "Zp")), min_size=1,
                                  max_size=3).filter(lambda t: t.split() == [t] and t != EPS)
sequences = st.lists(small_alphabet, max_size=10) | st.lists(tokens, max_size=10)


def levenshtein(a: list[str], b: list[str]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


@FAST
@given(st.lists(sequences, min_size=1, max_size=4), st.text(max_size=40))
def test_per_and_wer_of_a_sequence_against_itself_are_zero(refs, text):
    assume(any(refs))
    assert error_rate(refs, refs) == 0
    words = normalise_words(text).split()
    assume(words)
    assert error_rate([words], [words]) == 0


@FAST
@given(st.lists(st.tuples(sequences, sequences), min_size=1, max_size=4))
def test_error_rate_is_the_levenshtein_distance_over_the_reference_length(pairs):
    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    total = sum(map(len, refs))
    rate = error_rate(refs, hyps)
    if total == 0:
        assert math.isnan(rate)
    else:
        assert rate >= 0
        assert math.isclose(rate, sum(levenshtein(r, h) for r, h in pairs) / total)


@FAST
@given(sequences, sequences)
def test_jiwer_alignment_reproduces_both_sequences(ref, hyp):
    pairs = align(ref, hyp)
    assert [r for r, _ in pairs if r is not None] == ref
    assert [h for _, h in pairs if h is not None] == hyp


@FAST
@given(sequences, sequences)
def test_kaldi_align_reproduces_both_sequences_at_the_levenshtein_cost(ref, hyp):
    pairs = kaldi_align(ref, hyp)
    assert [r for r, _ in pairs if r != EPS] == ref
    assert [h for _, h in pairs if h != EPS] == hyp
    assert all((r, h) != (EPS, EPS) for r, h in pairs)
    assert sum(r != h for r, h in pairs) == levenshtein(ref, hyp)


phone_lists = st.lists(small_alphabet, max_size=8)


@FAST
@given(phone_lists, phone_lists, phone_lists)
def test_mdd_counts_add_up_without_truth(canonical, annotated, recognised):
    counts = mdd_counts(canonical, annotated, recognised)
    insertions = sum(c == EPS for c, _ in kaldi_align(canonical, annotated))
    assert counts["ta"] + counts["fr"] + counts["fa"] + counts["tr"] == len(canonical) + insertions
    assert counts["tr"] == counts["cd"] + counts["de"]
    assert all(v >= 0 for v in counts.values())
    perfect = mdd_counts(canonical, annotated, annotated)
    assert perfect["fr"] == perfect["fa"] == perfect["de"] == 0


# per canonical phone, what was said: the phone itself, a substitute, or a deletion
@st.composite
def truths(draw):
    canonical = draw(phone_lists)
    truth = [draw(st.sampled_from([c, c, "<del>"]) | small_alphabet) for c in canonical]
    return canonical, truth


def _annotated(truth):
    return [t for t in truth if t != "<del>"]


@FAST
@given(truths(), phone_lists)
def test_mdd_counts_with_truth_take_the_relation_from_the_truth_and_add_up(case, recognised):
    canonical, truth = case
    annotated = _annotated(truth)
    outcomes = mdd_outcomes(canonical, annotated, recognised, truth)
    # one decision per canonical phone, in the annotation's own relation (never re-aligned)
    assert [(c, s) for c, s, _, _ in outcomes] == [(c, EPS if t == "<del>" else t)
                                                    for c, t in zip(canonical, truth, strict=True)]
    counts = mdd_counts(canonical, annotated, recognised, truth)
    assert counts["ta"] + counts["fr"] + counts["fa"] + counts["tr"] == len(canonical)
    assert counts["tr"] == counts["cd"] + counts["de"]
    # a perfect recognition: every phone said is heard as said; only where the speaker deleted a phone can the
    # canonical-recognised alignment put a recognised phone (docs/metrics.md: "AH AH" with the second deleted)
    for c, said, heard, outcome in mdd_outcomes(canonical, annotated, annotated, truth):
        if said != EPS:
            assert heard == said and outcome == ("ta" if said == c else "cd")


@FAST
@given(truths(), phone_lists, phone_lists)
def test_with_truth_the_annotated_phones_must_be_the_truths(case, other, recognised):
    canonical, truth = case
    assume(other != _annotated(truth))
    try:
        mdd_counts(canonical, other, recognised, truth)
    except ValueError as e:
        assert "does not give the annotated phones" in str(e)
    else:
        raise AssertionError("annotated phones contradicting the truth were accepted")


# predictions.jsonl records as evaluation writes them: parsed or not
free_text = st.text(max_size=20)
phone_text = st.lists(small_alphabet | st.sampled_from(["ih1", "<DEL>", "<UNK>", "AH*"]), max_size=8).map(" ".join)


@st.composite
def prediction_records(draw):
    utt_id = draw(st.sampled_from(["a", "b", "c", "d"]))
    if draw(st.booleans()):
        prediction = draw(st.none() | apa_targets)
        return {"id": utt_id, "task": "apa", "reference": draw(apa_targets), "prediction": prediction}
    canonical, truth = draw(truths())
    reference = {"word_transcript": draw(free_text), "phoneme_transcript": " ".join(_annotated(truth)),
                 "canonical_phones": " ".join(canonical)}
    if draw(st.booleans()):
        reference["phone_truth"] = " ".join(truth)
    prediction = draw(st.none() | st.fixed_dictionaries({"word_transcript": free_text,
                                                         "phoneme_transcript": free_text | phone_text}))
    return {"id": utt_id, "task": "mdd", "reference": reference, "prediction": prediction}


@SLOWER
@given(st.lists(prediction_records(), max_size=8),
       st.fixed_dictionaries({aspect: st.floats(0, 10) for aspect in APA_ASPECTS}))
def test_compute_metrics_never_crashes_and_metrics_json_holds_no_bare_nan(records, means):
    metrics = compute_metrics(records, means)
    text = metrics_json(metrics)
    assert "NaN" not in text and "Infinity" not in text
    back = json.loads(text)
    assert set(back) == set(metrics)
    for key in ("parse_rate_apa", "parse_rate_mdd", "mdd_precision", "mdd_recall", "mdd_f1", "far", "frr", "der",
                "phone_precision", "phone_recall", "phone_f1", "wer", "per"):
        assert back.get(key) is None or back[key] >= 0
    assert back["n_apa"] + back["n_mdd"] == len(records)
    assert back["n_phones_scored"] == sum(len(normalise_phones(r["reference"]["canonical_phones"]))
                                          for r in records if r["task"] == "mdd")
