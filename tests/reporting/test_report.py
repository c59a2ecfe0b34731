"""apa report: the data it embeds, and the page in headless Chromium (tests/browser.py)."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

import pytest

from apa.data.records import APA_ASPECTS
from apa.metrics import mdd_outcomes, normalise_phones
from apa.reporting.browser import OUTCOME_CODES
from apa.reporting.report import main, write_report
from apa.run_folder import FORMAT_VERSION
from tests.browser import Page, chromium
from tests.synthetic_runs import make_sweep

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out


def embedded(report: Path) -> dict:
    text = report.read_text()
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S)
    return json.loads(match.group(1))


def predictions(run: Path, checkpoint: str) -> list[dict]:
    return [json.loads(x) for x in (run / "eval" / checkpoint / "predictions.jsonl").open()]


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Two runs x (2 epochs + final_model) with noisy parsed answers and some unparsed ones; the second run is
    evaluated on the sample's other split (another speaker), so views differ in their utterances."""
    root = make_sweep(tmp_path_factory.mktemp("report") / "sweep", splits=("test", "train"))
    return root, write_report([root], audio="link")


def test_embedded_data_matches_the_predictions_and_the_mdd_scorer(synthetic):
    root, report = synthetic
    data = embedded(report)
    assert [v["key"] for v in data["views"]] == [f"{run}/{c}" for run in ("fresh_r64_1", "pretrained_r320_0")
                                                 for c in ("checkpoint-epoch-1", "checkpoint-epoch-2", "final_model")]
    assert len(data["utts"]) == 40 and {u["speaker"] for u in data["utts"]} == {"0001", "0003"}
    index = {u["id"]: i for i, u in enumerate(data["utts"])}
    for view in data["views"]:
        answers = data["answers"][view["key"]]
        for rec in predictions(root / view["run"], view["checkpoint"]):
            i, pred = index[rec["id"]], rec["prediction"]
            utt = data["utts"][i]
            if rec["task"] == "apa":
                assert utt["ref"] == [rec["reference"][a] for a in APA_ASPECTS]
                assert answers["apa"][i] == ({"p": [pred[a] for a in APA_ASPECTS]} if pred else
                                             {"p": None, "raw": rec["raw"]})
                continue
            canonical = normalise_phones(rec["reference"]["canonical_phones"])
            said = normalise_phones(rec["reference"]["phoneme_transcript"])
            heard = normalise_phones(pred["phoneme_transcript"]) if pred else []
            expected = mdd_outcomes(canonical, said, heard)
            assert utt["pos"] == [[c, s] for c, s, _, _ in expected]
            assert answers["mdd"][i]["o"] == "".join(OUTCOME_CODES[o] for *_, o in expected)
            assert answers["mdd"][i]["h"].split() == [h for _, _, h, _ in expected]
            assert (answers["mdd"][i]["p"] is None) == (pred is None)
    # the audio is linked relative to the report, and every clip is there
    for u in data["utts"]:
        assert (report.parent / u["audio"]).resolve().is_file() and not u["audio"].startswith("/")


def test_audio_is_embedded_when_asked(tmp_path):
    root = make_sweep(tmp_path / "sweep", runs=("fresh_r64_0",), epochs=1, n_utterances=2)
    main([str(root), "--embed-audio", "--out", str(tmp_path / "out")])
    data = embedded(tmp_path / "out" / "report.html")
    assert [u["audio"][:22] for u in data["utts"]] == ["data:audio/wav;base64,"] * 2


def test_runs_and_metrics_without_the_new_counts_show_n_a(synthetic):
    _, report = synthetic
    text = report.read_text()
    # n scored / n in split: the synthetic metrics.json predate those counts
    assert text.count('<td class="na">n/a</td>') > 0 and "utterances evaluated" in text
    assert "paper (arXiv 2509.02915, LoRA-only)" in text and "0.724" in text
    assert "config.lora.r" in text and "config.data.test_split" in text  # config differences
    assert text.count('<img class="plot"') == 2  # per-epoch metrics, training loss


def test_the_sweep_callback_writes_the_report_beside_comparison_md(demo_sweep):
    report = demo_sweep / "report.html"
    assert report.exists() and (demo_sweep / "comparison.md").exists()
    data = embedded(report)
    runs = sorted(p.parent.name for p in demo_sweep.glob("*/training_config.json"))
    assert sorted({v["run"] for v in data["views"]}) == runs
    assert Counter(v["run"] for v in data["views"]) == dict.fromkeys(runs, 3)
    assert len(data["utts"]) == 4


def test_demo_report_in_chromium(demo_sweep, browser, tmp_path):
    report = write_report([demo_sweep], tmp_path, audio="link")  # a report elsewhere: links must still resolve
    page = Page(browser)
    page.page.goto(report.as_uri())
    p = page.page
    assert p.locator("table.results tbody tr").count() == 6 + 9  # 2 runs x 3 checkpoints, the paper's 9 rows
    assert p.locator("#b-rows .utt").count() == 4
    assert p.locator("#f-view option").count() == 6
    assert "4 of 4 utterances" in p.locator("#b-count").inner_text()
    view = p.locator("#f-view").input_value()  # the first run's first checkpoint
    records = predictions(demo_sweep / view.split("/")[0], view.split("/")[1])
    unparsed = [r for r in records if r["prediction"] is None]  # the tiny model answers mostly nonsense
    p.locator("#f-unparsed").check()
    assert p.locator("#b-rows .utt").count() == len({r["id"] for r in unparsed})
    assert p.locator("#b-rows .badge").count() == len(unparsed)
    # every filter on the page works with n/a answers
    p.locator("#f-min-error").fill("1")
    p.locator("#f-min-error").dispatch_event("change")
    assert p.locator("#b-rows .utt").count() == 0  # parse failures only and an |error|: none has both
    for sort in ("apa-error", "per", "detection", "mispronounced", "speaker", "id"):
        p.select_option("#f-sort", sort)
    p.locator("#f-min-error").fill("0")
    p.locator("#f-min-error").dispatch_event("change")
    audio = p.locator("#b-rows audio").first
    assert audio.get_attribute("src").endswith(".WAV") and not audio.get_attribute("src").startswith("data:")
    duration = p.evaluate("""() => new Promise((done) => {
        const a = document.querySelector('#b-rows audio');
        a.addEventListener('loadedmetadata', () => done(a.duration));
        a.addEventListener('error', () => done(-1));
        a.preload = 'metadata'; a.load();
    })""")
    assert duration > 0.5
    page.screenshot("report_demo.png", full_page=True)
    assert page.errors == []


def test_filters_sorting_and_views_in_chromium(synthetic, browser):
    root, report = synthetic
    page = Page(browser)
    page.page.goto(report.as_uri())
    p = page.page
    rows = p.locator("#b-rows .utt")
    ids = lambda: [rows.nth(i).get_attribute("data-id") for i in range(rows.count())]  # noqa: E731
    first = predictions(root / "fresh_r64_1", "checkpoint-epoch-1")
    assert rows.count() == 20  # the first view's run was evaluated on the 20 test utterances
    assert ids() == sorted(r["id"] for r in first if r["task"] == "apa")

    p.select_option("#f-task", "apa")
    p.locator("#f-unparsed").check()
    assert sorted(ids()) == sorted(r["id"] for r in first if r["task"] == "apa" and r["prediction"] is None)
    assert p.locator("#b-rows pre.raw").count() == rows.count()  # the raw answer of each unparsed one
    p.locator("#f-unparsed").uncheck()

    # largest errors: |error| >= 2 on total, sorted by it
    p.select_option("#f-aspect", "total")
    p.locator("#f-min-error").fill("2")
    p.locator("#f-min-error").dispatch_event("change")
    errors = {r["id"]: abs(r["prediction"]["total"] - r["reference"]["total"]) for r in first
              if r["task"] == "apa" and r["prediction"]}
    assert sorted(ids()) == sorted(i for i, e in errors.items() if e >= 2)
    p.select_option("#f-sort", "apa-error")
    assert [errors[i] for i in ids()] == sorted((e for e in errors.values() if e >= 2), reverse=True)
    largest = max(errors.values())  # the model's cell is coloured by its error
    model_row = rows.first.locator(".scores tr").nth(2)
    assert model_row.locator("td").nth(3).get_attribute("class") == f"e{min(4, largest)}"
    p.locator("#f-min-error").fill("0")
    p.locator("#f-min-error").dispatch_event("change")

    # MDD: outcomes coloured phone by phone
    p.select_option("#f-task", "mdd")
    p.select_option("#f-sort", "detection")
    # every answer, unparsed ones too (nothing recognised: how the scorer counts them)
    assert p.locator("#b-rows table.phones").count() == sum(1 for r in first if r["task"] == "mdd")
    cells = p.locator("#b-rows table.phones td[class^='o-']").count()
    assert cells > 0 and p.locator("#b-rows td.o-r").count() > 0

    # speakers: the second run was evaluated on the other split
    p.select_option("#f-speaker", "0001")
    assert rows.count() == 0 and "No utterance matches" in p.locator("#b-rows").inner_text()
    p.select_option("#f-view", "pretrained_r320_0/final_model")
    assert rows.count() == 20
    p.select_option("#f-speaker", "")
    p.locator("#f-search").fill("BEAR")
    assert ids() == ["000010011"]
    p.locator("#f-search").fill("")
    p.select_option("#f-task", "both")
    p.select_option("#f-sort", "mispronounced")
    p.evaluate("() => document.getElementById('utterances').scrollIntoView()")
    page.screenshot("report_browser.png")
    assert page.errors == []


def test_5000_utterances_x_5_checkpoints_stay_responsive(browser, tmp_path):
    root = make_sweep(tmp_path / "sweep", runs=("fresh_r64_0",), epochs=4, n_utterances=5000)
    started = time.monotonic()
    report = write_report([root])
    built = time.monotonic() - started
    page = Page(browser)
    started = time.monotonic()
    page.page.goto(report.as_uri())
    p = page.page
    assert p.locator("#b-rows .utt").count() == 50  # one page, whatever the data's size
    loaded = time.monotonic() - started
    assert "5000 of 5000 utterances" in p.locator("#b-count").inner_text()
    timings = p.evaluate("""() => {
        const t = [];
        const change = (id, value) => { const e = document.getElementById(id); e.value = value;
                                         e.dispatchEvent(new Event('change')); };
        for (const [id, value] of [['f-view', 'fresh_r64_0/checkpoint-epoch-3'], ['f-sort', 'apa-error'],
                                   ['f-sort', 'detection'], ['f-task', 'mdd'], ['f-page-size', '100']]) {
            const start = performance.now(); change(id, value); t.push(performance.now() - start);
        }
        return t;
    }""")
    p.locator("#b-next").click()
    assert "page 2 / 50" in p.locator("#b-page").inner_text()
    assert p.locator("#b-rows .utt").count() == 100
    print(f"5000 x 5: report built in {built:.1f} s, {report.stat().st_size / 2**20:.1f} MiB, page ready in "
          f"{loaded:.1f} s, filter/sort changes {', '.join(f'{t:.0f}' for t in timings)} ms")
    assert loaded < 20 and max(timings) < 2000
    assert page.errors == []


def test_a_run_without_evaluations_or_audio_still_renders(tmp_path, browser):
    root = make_sweep(tmp_path / "sweep", runs=("fresh_r64_0",), epochs=1, n_utterances=3)
    record = json.loads((root / "fresh_r64_0" / "training_config.json").read_text())
    record["config"]["data"]["path"] = str(tmp_path / "moved")  # the corpus is not here: no audio, no speakers
    record["config"]["data"]["name"] = "speechocean762"
    (root / "fresh_r64_0" / "training_config.json").write_text(json.dumps(record))
    bare = root / "untrained_1"
    bare.mkdir()
    (bare / "training_config.json").write_text(json.dumps({"format_version": FORMAT_VERSION,
                                                           "config": {"lora": {"name": "fresh_r64"}},
                                                           "parameters": {"trainable": 1}}))
    report = write_report([root], audio="link")
    page = Page(browser)
    page.page.goto(report.as_uri())
    assert page.page.locator("#b-rows .utt").count() == 3
    assert page.page.locator("#b-rows audio").count() == 0 and "no audio" in page.page.locator("#b-rows").inner_text()
    assert "not evaluated" in page.page.locator("table.results").inner_text()
    assert page.errors == []


def test_runs_of_two_sweeps_with_one_name_stay_apart_and_a_torn_line_is_left_out(tmp_path):
    first = make_sweep(tmp_path / "a", runs=("fresh_r64_0",), epochs=1, n_utterances=3)
    second = make_sweep(tmp_path / "b", runs=("fresh_r64_0",), epochs=1, n_utterances=3, seed=1)
    with (second / "fresh_r64_0" / "eval" / "final_model" / "predictions.jsonl").open("a") as f:
        f.write('{"id": "000030012", "task": "ap')  # evaluation stopped mid-write
    data = embedded(write_report([first, second], tmp_path / "out"))
    assert [v["key"] for v in data["views"]] == [f"{s}/fresh_r64_0/{c}" for s in ("a", "b")
                                                 for c in ("checkpoint-epoch-1", "final_model")]
    assert data["answers"]["a/fresh_r64_0/final_model"] != data["answers"]["b/fresh_r64_0/final_model"]


def test_report_carries_comparison_md_s_warnings_in_chromium(tmp_path, browser):
    """An overfit run (random base, final model only, scored on the split it trained on, every answer parsed)
    beside a demo run (random weights, nothing parsed, scored on the test split): report.html warns as comparison.md
    does, from the same notes (apa.reporting.compare.comparison_notes), and marks the rows."""
    from apa.reporting.compare import compare, comparison_notes
    from apa.reporting.runs import collect

    root = make_sweep(tmp_path / "sweep", runs=("overfit_0",), epochs=0, splits=("train",), tiny=True, unparsed=0.0)
    make_sweep(root, runs=("fresh_r64_1",), epochs=2, tiny=True, unparsed=1.0)
    compare([root])
    report = write_report([root], audio="none")
    page = Page(browser)
    page.page.goto(report.as_uri())
    p = page.page
    warnings = p.locator("#comparison p.note.warning").all_inner_texts()
    assert len(warnings) == 3, warnings
    assert warnings[0].startswith("These rows were scored on 2 different test sets")
    assert "split train" in warnings[0] and "split test" in warnings[0]
    assert warnings[1].startswith("Rows marked § were scored on the split their run trained on")
    assert warnings[2].startswith("Runs marked † started from a generated miniature with random weights")
    assert "Where none of their answers parse" in warnings[2]  # the demo run's
    notes = p.locator("#comparison p.note").all_inner_texts()
    assert any(n.startswith("n/a where no APA answer parsed: PCC in fresh_r64_1") for n in notes), notes
    # the same sentences as comparison.md's, which come from the same function
    markdown = (root / "comparison.md").read_text()
    rows = [row for run in sorted(root.iterdir()) if run.is_dir() for row in collect(run)]
    for note in comparison_notes(rows):
        assert note in markdown
        assert note.replace("**", "").replace("`", "") in notes
    # the rows carry the marks, and the column names their test sets
    runs = p.locator("table.results tbody tr td:first-child").all_inner_texts()[:4]
    assert runs == ["fresh_r64_1 †"] * 3 + ["overfit_0 † §"]
    assert p.locator("table.results thead th").all_inner_texts()[-1] == "test set"
    # integers as integers: the record's num_train_epochs (2.0 and 0.0, as the trainer's schema stores them)
    config = p.locator("table.config tr", has_text="config.trainer.num_train_epochs").locator("td")
    assert config.all_inner_texts()[1:] == ["2", "0"]
    page.screenshot("report_warnings.png")
    assert page.errors == []


def test_a_lost_predictions_file_is_named_on_the_console_in_comparison_md_and_in_the_report(tmp_path, caplog):
    """`rm <run>/eval/final_model/predictions.jsonl`: compare and report said nothing, and final_model was silently
    absent from the utterance browser beside its metrics row. Both warn naming the file, and say so in their notes
    (report.html also in the browser's section)."""
    import logging

    from apa.reporting.compare import compare

    root = make_sweep(tmp_path / "sweep", runs=("fresh_r64_0",), epochs=1, n_utterances=3)
    lost = root / "fresh_r64_0" / "eval" / "final_model" / "predictions.jsonl"
    lost.unlink()
    with caplog.at_level(logging.WARNING):
        compare([root], tmp_path / "compared")
        report = write_report([root], tmp_path / "report", audio="none")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all(w.startswith(f"{lost} is missing: the answers of fresh_r64_0 final_model "
                                                   "are left out") for w in warnings), warnings
    assert f"python evaluate.py run_dir={root / 'fresh_r64_0'} checkpoint=final_model" in warnings[0]
    note = "The answers of 1 evaluated checkpoint(s) are missing** (no predictions.jsonl): fresh_r64_0 final_model"
    assert note in (tmp_path / "compared" / "comparison.md").read_text()
    text = report.read_text()
    browser_section = text[text.index('<section id="utterances">'):]
    assert "<strong>The answers of 1 evaluated checkpoint(s) are missing</strong>" in browser_section
    assert [v["key"] for v in embedded(report)["views"]] == ["fresh_r64_0/checkpoint-epoch-1"]
