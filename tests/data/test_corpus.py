"""The corpus reader loses nothing silently: every phone symbol the annotation may hold keeps its meaning, a
mispronunciation must sit where its canonical phone is, the test split allows no skip unless asked to, and metrics
say how much of the split they scored."""

import json

import pytest

from apa.data.labels import LABEL_MISMATCH, DataError, SkipReport
from apa.data.records import INVENTORY, L2_PHONES
from apa.data.sources import load_configured_split, load_split
from apa.data.stats import phone_stats
from apa.evaluation.examples import evaluation_set
from apa.evaluation.predictions import score_file
from apa.run_folder import SPLIT_FILE
from tests.conftest import compose_eval_config, edit_scores


def _remove_first_clip(root, split) -> str:
    """Delete the audio file of the split's first utterance; return its id."""
    utt_id, rel = (root / split / "wav.scp").read_text().split("\n", 1)[0].split()
    (root / rel).unlink()
    return utt_id


def _word(scores, utt_id, text):
    return next(w for w in scores[utt_id]["words"] if w["text"] == text)


def _mis(index, canonical, pronounced):
    return {"index": index, "canonical-phone": canonical, "pronounced-phone": pronounced}


def _utterance(root, split, utt_id, **options):
    return next(u for u in load_split("local", str(root), split, max_bad_fraction=0, **options) if u.id == utt_id)


def test_the_inventory_is_the_papers_46_units():
    assert L2_PHONES == {"IR", "AR", "TR", "DZ", "TS", "DR"}
    assert len(INVENTORY) == 46 and "<unk>" in INVENTORY


def test_l2_phones_of_the_original_release_are_kept_distinct_and_counted(corpus):
    # 000010011 "WE CALL IT BEAR": BEAR's canonical B EH0 R becomes B EH0 AR1 (an L2 canonical phone, with stress),
    # said B EH0 TR; CALL's canonical L is said as DR. Neither is mapped to a CMU phone.
    def edit(scores):
        bear = _word(scores, "000010011", "BEAR")
        bear["phones"] = ["B", "EH0", "AR1"]
        bear["mispronunciations"] = [_mis(2, "AR", "TR")]
        _word(scores, "000010011", "CALL")["mispronunciations"] = [_mis(2, "L", "DR")]

    edit_scores(corpus, edit)
    utt = _utterance(corpus, "train", "000010011")
    assert utt.canonical_phones == ["W", "IY", "K", "AO", "L", "IH", "T", "B", "EH", "AR"]
    assert utt.annotated_phones == ["W", "IY", "K", "AO", "DR", "IH", "T", "B", "EH", "TR"]
    stats = phone_stats([utt], "train")
    assert stats["canonical_l2_phones"] == 1 and stats["said_l2_phones"] == 2
    assert stats["l2_phones"] == {"AR": {"canonical": 1, "said": 0}, "DR": {"canonical": 0, "said": 1},
                                  "TR": {"canonical": 0, "said": 1}}
    assert stats["mispronounced"]["substituted"] == 2


def test_pronounced_phones_lose_their_stress_digit_and_keep_their_marks(corpus):
    # WE CALL IT BEAR: W said as V, IY0 deleted (<DEL>), K unclear (<unk>), AO distorted (AO*), IH said as IY1 -> IY
    # (the stress digit stripped as from a canonical phone)
    def edit(scores):
        _word(scores, "000010011", "WE")["mispronunciations"] = [_mis(0, "W", "V"), _mis(1, "IY", "<DEL>")]
        _word(scores, "000010011", "CALL")["mispronunciations"] = [_mis(0, "K", "<unk>"), _mis(1, "AO", "AO*")]
        _word(scores, "000010011", "IT")["mispronunciations"] = [_mis(0, "IH0", "IY1")]

    edit_scores(corpus, edit)
    utt = _utterance(corpus, "train", "000010011")
    assert utt.phone_truth == ["V", "<del>", "<unk>", "AO*", "L", "IY", "T", "B", "EH", "R"]
    assert utt.annotated_phones == ["V", "<unk>", "AO*", "L", "IY", "T", "B", "EH", "R"]
    assert len(utt.phone_truth) == len(utt.canonical_phones)
    stats = phone_stats([utt], "train")["mispronounced"]
    assert stats == {"substituted": 2, "distorted": 1, "unk": 1, "deleted": 1}


def test_a_mispronunciation_index_that_misses_its_canonical_phone_stops_naming_it(corpus):
    # THEME is TH IY0 M; the entry says index 2 (M) but canonical-phone IY: which phone was mispronounced is unknown
    def edit(scores):
        _word(scores, "000010113", "THEME")["mispronunciations"] = [_mis(2, "IY", "AH")]

    edit_scores(corpus, edit)
    with pytest.raises(DataError) as error:
        load_split("local", str(corpus), "train", max_bad_fraction=0.5)
    message = str(error.value)
    for part in ("000010113", "THEME", "index 2", "'M'", "'IY'", "data.on_label_mismatch=skip"):
        assert part in message


def test_two_mispronunciations_at_one_index_stop_naming_the_utterance_and_index(corpus):
    # THEME is TH IY0 M: two entries both at index 1 (IY) would leave the last one silently winning
    edit_scores(corpus, lambda s: _word(s, "000010113", "THEME").update(
        mispronunciations=[_mis(1, "IY", "AH"), _mis(1, "IY", "EH")]))
    with pytest.raises(DataError) as error:
        load_split("local", str(corpus), "train", max_bad_fraction=0.5)
    for part in ("000010113", "THEME", "two mispronunciation entries at index 1", "data.on_label_mismatch=skip"):
        assert part in str(error.value)
    report = SkipReport()  # or a counted skip, under the existing option
    utts = load_split("local", str(corpus), "train", max_bad_fraction=0.1, on_label_mismatch="skip", report=report)
    assert "000010113" not in {u.id for u in utts} and report.reasons == {LABEL_MISMATCH: 1}


def test_with_on_label_mismatch_skip_the_utterance_is_skipped_and_counted(corpus, caplog):
    edit_scores(corpus, lambda s: _word(s, "000010113", "THEME").update(mispronunciations=[_mis(0, "IY", "AH")]))
    caplog.set_level("INFO")
    report = SkipReport()
    utts = load_split("local", str(corpus), "train", max_bad_fraction=0.1, on_label_mismatch="skip", report=report)
    assert len(utts) == 19 and "000010113" not in {u.id for u in utts}
    assert report.reasons == {LABEL_MISMATCH: 1} and "skipped 1 of 20" in caplog.text
    with pytest.raises(DataError, match="on_label_mismatch='ignore' is unknown"):
        load_split("local", str(corpus), "train", max_bad_fraction=0.1, on_label_mismatch="ignore")


def _eval_config(root, *overrides):
    return compose_eval_config("model=tiny", "data=sample", f"data.path={root}", "prompts=terse", *overrides)


@pytest.mark.slow
def test_the_test_split_allows_no_skipped_utterance_unless_asked(corpus):
    victim = _remove_first_clip(corpus, "test")
    cfg = _eval_config(corpus)
    assert cfg.data.max_bad_fraction == 0.05 and cfg.data.max_bad_fraction_test == 0
    with pytest.raises(DataError) as error:
        load_configured_split(cfg.data, "test")
    message = str(error.value)
    assert "skipped 1 of 20" in message and victim in message and "data.max_bad_fraction_test" in message
    # the same loss in the training split is within data.max_bad_fraction
    _remove_first_clip(corpus, "train")
    assert len(load_configured_split(cfg.data, "train")) == 19

    allowed = _eval_config(corpus, "data.max_bad_fraction_test=0.05")
    rows, split = evaluation_set(allowed, "<AUD>")
    assert len(rows) == 2 * 19 and victim not in {r["id"] for r in rows}
    assert (split["utterances_in_split"], split["utterances_skipped"], split["utterances_usable"]) == (20, 1, 19)
    assert split["skipped_by_reason"] == {"missing audio file": 1} and split["limit"] is None
    assert split["phones_in_split"] == split["phones"]["canonical_phones"] + split["phones_skipped"]
    metrics = _score_references(rows, split, corpus.parent / "eval")
    assert (metrics["n_utterances_scored"], metrics["n_utterances_in_split"]) == (19, 20)
    assert metrics["n_phones_scored"] == split["phones"]["canonical_phones"] < metrics["n_phones_in_split"]


def _score_references(rows, split, folder):
    """metrics.json for answers equal to the references, with `split` as test_split.json beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    records = [{"id": r["id"], "task": r["task"], "reference": r["reference"], "prediction": r["reference"], "raw": ""}
               for r in rows]
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if split is not None:
        (folder / SPLIT_FILE).write_text(json.dumps(split))
    score_file(folder / "predictions.jsonl", {})
    return json.loads((folder / "metrics.json").read_text())


def test_metrics_say_how_much_of_the_split_was_scored(tmp_path, caplog):
    cfg = compose_eval_config("model=tiny", "data=sample", "data.limit=3", "prompts=terse")
    rows, split = evaluation_set(cfg, "<AUD>")
    assert split["limit"] == 3 and split["utterances_in_split"] == 3  # the limited subset, said so
    mdd = [r["reference"] for r in rows if r["task"] == "mdd"]
    assert all(len(r["phone_truth"].split()) == len(r["canonical_phones"].split()) for r in mdd)
    n_phones = sum(len(r["canonical_phones"].split()) for r in mdd)
    metrics = _score_references(rows, split, tmp_path / "new")
    assert {k: metrics[k] for k in ("n_utterances_scored", "n_utterances_in_split", "n_phones_scored",
                                    "n_phones_in_split", "split_limit")} == {
        "n_utterances_scored": 3, "n_utterances_in_split": 3, "n_phones_scored": n_phones,
        "n_phones_in_split": n_phones, "split_limit": 3}
    assert metrics["mdd_fr"] == metrics["mdd_fa"] == 0 and metrics["per"] == 0
    # an evaluation folder from before test_split.json: the split's size is unknown, not guessed
    caplog.set_level("WARNING")
    old = _score_references(rows, None, tmp_path / "old")
    assert old["n_utterances_scored"] == 3 and old["n_utterances_in_split"] is None
    assert old["n_phones_in_split"] is None and "no test_split.json" in caplog.text


@pytest.mark.slow
def test_an_utterance_in_both_splits_is_refused_before_training(corpus, make_config):
    """Trained on, then scored as unseen: refused at the start of training, naming it; a test split that is the
    training split on purpose (experiment=overfit) is allowed."""
    from apa.errors import UserError
    from apa.training.recipe import check_disjoint_splits

    test_line = (corpus / "test" / "wav.scp").read_text().splitlines()[0]
    utt_id = test_line.split()[0]
    for name in ("wav.scp", "text", "utt2spk"):
        test_lines = {line.split()[0]: line for line in (corpus / "test" / name).read_text().splitlines()}
        with (corpus / "train" / name).open("a") as f:
            f.write(test_lines[utt_id] + "\n")
    cfg = make_config("experiment=demo", "data.source=local", f"data.path={corpus}", "data.limit=null")
    train = load_split("local", str(corpus), "train", max_bad_fraction=0.5)
    assert utt_id in {u.id for u in train}
    with pytest.raises(UserError, match=f"1 utterances are in both the training split .* {utt_id}"):
        check_disjoint_splits(cfg.data, train)
    check_disjoint_splits(make_config("experiment=overfit", "data.source=local", f"data.path={corpus}").data, train)


@pytest.mark.parametrize(("edit", "detail"), [
    (lambda s: _word(s, "000010113", "THEME").update(text="THEN"), "do not spell the text"),
    (lambda s: s["000010113"]["words"].pop(), "do not spell the text"),
    (lambda s: _word(s, "000010113", "THEME").update(phones=[], mispronunciations=[]), "has no phones"),
    (lambda s: s["000010113"].update(text=s["000010113"]["text"] + " \U0001f43b"), "do not spell the text"),  # emoji
])
def test_words_that_do_not_spell_the_text_or_have_no_phones_are_a_counted_skip(corpus, caplog, edit, detail):
    """The MDD target (words and phones) would contradict the prompted sentence: a bad label, counted and named."""
    edit_scores(corpus, edit)
    caplog.set_level("WARNING")
    report = SkipReport()
    utts = load_split("local", str(corpus), "train", max_bad_fraction=0.1, report=report)
    assert "000010113" not in {u.id for u in utts} and report.reasons == {"bad labels": 1}
    assert "000010113" in caplog.text and detail in caplog.text


def test_invisible_characters_and_odd_whitespace_never_reach_the_targets(corpus):
    """A zero-width space inside a word, tabs and double spaces in the text were kept in the prompt and in the MDD
    target's words (WER then counted `TWO\u200b` against `TWO`): the text is cleaned as it is read."""
    original = {}

    def edit(scores):
        original["text"] = scores["000010113"]["text"]
        first, *rest = original["text"].split()
        scores["000010113"]["text"] = f"  {first}\u200b \t" + "  ".join(rest) + " \ufeff\n"

    edit_scores(corpus, edit)
    (utt,) = [u for u in load_split("local", str(corpus), "train", max_bad_fraction=0.0) if u.id == "000010113"]
    assert utt.text == original["text"]


def test_an_unknown_split_names_the_splits_the_corpus_has(corpus):
    with pytest.raises(DataError, match=r"has no split 'trian' .*: its splits are test, train \(data.train_split"):
        load_split("local", str(corpus), "trian", max_bad_fraction=0.1)
    with pytest.raises(DataError, match="data.path must point at the corpus root"):  # not a corpus at all
        load_split("local", str(corpus / "WAVE"), "train", max_bad_fraction=0.1)


def test_a_local_corpus_is_the_same_data_wherever_it_lies_and_another_once_edited(corpus, tmp_path, make_config):
    """Data identity by content (docs/data.md): a copy moved elsewhere keeps its digest, so a run evaluated on it
    still writes to its own eval/; a label edited in place changes it, so a resume is refused (it resumed on the
    edited labels before, its record naming the old data)."""
    import shutil

    from apa.data.release import corpus_digest, dataset_identity, same_dataset
    from apa.evaluation.evaluate import evaluation_config

    trained = make_config("experiment=demo", "data.source=local", f"data.path={corpus}")
    recorded = dataset_identity(trained.data)
    moved = shutil.copytree(corpus, tmp_path / "elsewhere" / "so762")
    shutil.rmtree(corpus)  # the run's corpus is gone from where it trained
    here = make_config("experiment=demo", "data.source=local", f"data.path={moved}")
    assert corpus_digest(moved) == recorded["content"] and same_dataset(recorded, dataset_identity(here.data))
    _, folder = evaluation_config(here, trained, [f"data.path={moved}"], recorded)
    assert folder is None  # the run's own eval/

    edit_scores(moved, lambda scores: scores["000010011"].update(accuracy=(scores["000010011"]["accuracy"] + 1) % 11))
    edited = dataset_identity(here.data)
    assert edited["content"] != recorded["content"] and not same_dataset(recorded, edited)
    _, folder = evaluation_config(here, trained, [f"data.path={moved}"], recorded)
    assert folder is not None and folder.startswith("eval-")
    older = {k: v for k, v in recorded.items() if k != "content"}  # a record written before the digest
    assert same_dataset(older, recorded) and not same_dataset(older, {**recorded, "path": "/other"})
