"""apa app: the page's answers to good and bad input, then the page itself in headless Chromium, scoring an
uploaded WAV with the tiny adapter the demo sweep trained (conftest.demo_sweep)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from apa.data import SAMPLE_ROOT
from tests.browser import Page, chromium, free_port

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out

WAV = SAMPLE_ROOT / "WAVE" / "SPEAKER0001" / "000010011.WAV"
SENTENCE = "WE CALL IT BEAR"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="module")
def predictor(demo_sweep):
    from apa.serve.predict import Predictor

    return Predictor(demo_sweep / "fresh_r64_1" / "final_model", max_new_tokens=8)  # short answers: CPU decoding


@pytest.fixture(scope="module")
def app_url(predictor):
    from apa.serve.app import CSS, build

    page = build(predictor)
    _, url, _ = page.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, css=CSS,
                            ssr_mode=False, quiet=True)
    yield url
    page.close()


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def test_sample_sentences_are_offered():
    from apa.serve.app import sample_sentences

    sentences = sample_sentences()
    assert len(sentences) == 40 and SENTENCE in sentences


def test_bad_input_becomes_a_message_never_a_traceback(predictor, tmp_path):
    from apa.serve.app import score_page

    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not a sound file" * 50)
    long_clip = tmp_path / "long.wav"
    sf.write(long_clip, np.random.default_rng(0).uniform(-0.1, 0.1, 16000 * 31).astype(np.float32), 16000)
    cases = [(None, SENTENCE, "no recording"), (str(WAV), "WE CALL IT BLORPTH", "BLORPTH"),
             (str(WAV), "   ", "empty"), (str(garbage), SENTENCE, "unreadable audio"),
             (str(long_clip), SENTENCE, "audio too long"), (str(tmp_path / "gone.wav"), SENTENCE, "missing audio file")]
    for audio, text, expected in cases:
        message, scores, phones = score_page(predictor, audio, text)
        assert 'id="apa-error"' in message and expected in message, (audio, text, message)
        assert "Traceback" not in message and scores == phones == ""


def test_unexpected_failures_are_a_message_too():
    from apa.serve.app import score_page

    class Broken:
        def score(self, audio, text):
            raise RuntimeError("out of memory")

    message, _, _ = score_page(Broken(), str(WAV), SENTENCE)
    assert "RuntimeError: out of memory" in message and "Traceback" not in message


def test_app_in_chromium_scores_an_uploaded_wav(app_url, browser):
    page = Page(browser, height=900)
    p = page.page
    p.goto(app_url)
    # which adapter answers, and that it is a toy (the demo's base model is a random miniature)
    adapter = p.locator("#apa-adapter").inner_text()
    assert "fresh_r64_1" in adapter and "LoRA fresh_r64 (r=64, alpha=128)" in adapter and "final_model" in adapter
    assert "random weights" in p.locator("#apa-toy").inner_text()
    p.locator('#apa-audio button[aria-label="Upload file"]').click()
    p.locator("#apa-audio input[type=file]").set_input_files(str(WAV))
    p.locator("#apa-audio audio, #apa-audio [data-testid='waveform-Audio']").first.wait_for(state="attached")
    # pick the sentence from the bundled sample's list: it fills the text box
    p.locator("#apa-pick input").click()
    p.get_by_role("option", name=SENTENCE, exact=True).click()
    p.wait_for_function("() => document.querySelector('#apa-text textarea').value === 'WE CALL IT BEAR'")
    p.locator("#apa-score").click()
    p.locator("#apa-phones").wait_for(timeout=120_000)
    text = p.locator("#apa-phones-box").inner_text()
    # the expected phones are CMUdict's, each facing what was heard; mismatches highlighted
    expected = p.locator("#apa-phones tr").first.locator("td").all_inner_texts()
    assert [x for x in expected if x != "–"] == "W IY K AO L IH T B EH R".split()
    assert p.locator("#apa-phones td.diff").count() > 0 and "canonical phones differ" in text
    scores = p.locator("#apa-scores-box").inner_text()
    assert "Scores" in scores and ("accuracy" in scores or "could not be read" in scores)
    page.screenshot("app.png", full_page=True)

    p.locator("#apa-text textarea").fill("WE CALL IT BLORPTH")
    p.locator("#apa-score").click()
    p.locator("#apa-error").wait_for(timeout=60_000)
    assert "not in the CMU pronouncing dictionary: BLORPTH" in p.locator("#apa-error").inner_text()
    assert p.locator("#apa-phones").count() == 0
    page.screenshot("app_error.png")


def test_a_port_in_use_is_one_line_before_the_model_loads(tmp_path):
    import socket

    from apa.serve.app import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as stopped:
            main(["--adapter", str(tmp_path), "--port", str(port)])  # no adapter there: never reached
    assert str(stopped.value).startswith(f"error: cannot serve on 127.0.0.1:{port}")
    assert f"--port {port + 1}" in str(stopped.value)


@pytest.mark.parametrize(("args", "message"), [
    (["--port", "70000"], "pass a --port from 1024 to 65535"),  # an OverflowError traceback before
    (["--host", "256.1.1.1"], "this machine has no such address; pass --host 127.0.0.1"),  # blamed the port before
])
def test_a_port_out_of_range_or_an_address_not_here_is_one_line(tmp_path, args, message):
    from apa.serve.app import main

    with pytest.raises(SystemExit) as stopped:
        main(["--adapter", str(tmp_path), *args])
    assert str(stopped.value).startswith("error: cannot serve on ") and message in str(stopped.value)


def test_max_new_tokens_below_one_is_a_usage_error(tmp_path, capsys):
    from apa.serve.app import main

    with pytest.raises(SystemExit) as stopped:
        main(["--adapter", str(tmp_path), "--max-new-tokens", "0"])
    assert stopped.value.code == 2 and "'0' is not a whole number of at least 1" in capsys.readouterr().err


def test_the_page_names_the_adapter_and_marks_a_toy(demo_sweep, tmp_path):
    """The run's record says what was trained: the demo's tiny base has random weights (a notice on the page); the
    same record with the released base (a hub id, no miniature) has none."""
    import json

    from apa.reporting.runs import run_identity
    from apa.serve.app import adapter_html

    run = demo_sweep / "fresh_r64_1"
    toy = run_identity(run)
    assert toy["run"] == "fresh_r64_1" and toy["lora"] == "fresh_r64" and toy["random_weights"]
    page = adapter_html(run / "final_model", toy)
    assert 'id="apa-toy"' in page and "model=tiny" in page and str(run / "final_model") in page
    real = tmp_path / "real_run"
    real.mkdir()
    record = json.loads((run / "training_config.json").read_text())
    record["config"]["model"] = {**record["config"]["model"], "name": "phi4mm", "tiny": None,
                                 "path": "microsoft/Phi-4-multimodal-instruct", "revision": "refs/pr/70"}
    (real / "training_config.json").write_text(json.dumps(record))
    released = run_identity(real)
    assert not released["random_weights"]
    page = adapter_html(real / "final_model", released)
    assert "apa-toy" not in page and "microsoft/Phi-4-multimodal-instruct at refs/pr/70" in page


def test_launch_names_the_projects_share_flag_not_gradios(demo_sweep, tmp_path):
    """`apa app` as a user starts it: once the page is up it prints its address and how to get a public link with
    this command (`apa app … --share`), and not Gradio's own hint to set `share=True` in `launch()`; Ctrl-C stops it."""
    import signal
    import subprocess
    import sys
    import threading
    import urllib.request

    from tests.conftest import REPO

    adapter = demo_sweep / "fresh_r64_1" / "final_model"
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "apa", "app", "--adapter", str(adapter), "--port", str(port),
                             "--max-new-tokens", "8"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    guard = threading.Timer(600, proc.kill)  # a hung start fails the test instead of the session
    guard.start()
    printed = []
    try:
        for line in proc.stdout:
            printed.append(line)
            if "--share" in line:
                break
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/config").read().decode()
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
        guard.cancel()
    output = "".join(printed) + rest
    assert f"* Running on local URL:  http://127.0.0.1:{port}" in output, output
    assert f"apa app --adapter {adapter} --share" in output, output
    assert "share=True" not in output and "launch()" not in output, output
    assert "apa-adapter" in page and proc.returncode == 0
