"""A live scoring page for a trained adapter: record or upload, type or pick the sentence, get the four scores and the
phones compared with the sentence's canonical pronunciation (CMUdict), as `apa predict` does.

    pip install -e '.[app]'
    apa app --adapter outputs/runs/<run>/final_model              http://127.0.0.1:7860
    apa app --adapter <run>/final_model --port 8000 --host 0.0.0.0   (reachable from the network: on purpose)

Only localhost by default; `--share` (a public gradio.live link) is off unless asked for. The page names the adapter
and its run (LoRA, base model) and says so when the base had random weights (a toy). Bad input (no recording, an
unknown word, an unreadable or too long file) is shown on the page as a message, never as a stack trace.
"""

from __future__ import annotations

import argparse
import errno
import html
import logging
import os
import shlex
from pathlib import Path

from apa.data import SAMPLE_ROOT
from apa.data.records import APA_ASPECTS
from apa.serve.predict import PredictError, Predictor, positive

log = logging.getLogger(__name__)

CSS = """
.apa-msg { padding: 8px 12px; border-radius: 6px; background: #fdecea; color: #611a15; border: 1px solid #f5c2bd; }
.apa-note { color: #5f6b76; font-size: 0.9em; }
.apa-toy { padding: 8px 12px; border-radius: 6px; background: #fff4d6; color: #5c4400; border: 1px solid #f0d58c; }
table.apa-scores td, table.apa-scores th { padding: 4px 10px; text-align: center; border: 1px solid #d8dee4; }
table.apa-scores td.score { font-size: 1.4em; font-weight: 600; }
table.apa-phones td, table.apa-phones th { padding: 2px 5px; text-align: center; border: 1px solid #d8dee4;
  font-family: ui-monospace, Consolas, monospace; }
table.apa-phones th { font-family: inherit; font-weight: 500; text-align: right; }
table.apa-phones td.diff { background: #f6b3ad; font-weight: 700; }
.apa-raw { white-space: pre-wrap; overflow-wrap: anywhere; font-family: ui-monospace, Consolas, monospace;
  font-size: 0.85em; background: #f5f7f9; padding: 4px 6px; max-height: 8em; overflow: auto; }
"""


def sample_sentences() -> list[str]:
    """The sentences of the bundled SpeechOcean762 sample, to pick from."""
    sentences = set()
    for split in ("train", "test"):
        for line in (SAMPLE_ROOT / split / "text").read_text().splitlines():
            if "\t" in line or " " in line:
                sentences.add(line.split(maxsplit=1)[1].strip())
    return sorted(sentences)


def _message(text: str) -> str:
    return f'<div class="apa-msg" id="apa-error">{html.escape(text)}</div>'


def scores_html(result: dict) -> str:
    scores = result["scores"]
    if not scores:
        return ('<h3>Scores</h3><p class="apa-note">The model\'s answer could not be read as scores:</p>'
                f'<div class="apa-raw">{html.escape(result["raw"]["apa"])}</div>')
    head = "".join(f"<th>{html.escape(a)}</th>" for a in APA_ASPECTS)
    cells = "".join(f'<td class="score">{html.escape(str(scores[a]))}</td>' for a in APA_ASPECTS)
    return (f'<h3>Scores</h3><table class="apa-scores" id="apa-scores"><tr>{head}</tr><tr>{cells}</tr></table>'
            '<p class="apa-note">0–10, as SpeechOcean762\'s annotators score.</p>')


def phones_html(result: dict) -> str:
    pairs = result["alignment"]
    expected = "".join(f'<td class="{"diff" if c != h else ""}">{html.escape(c or "–")}</td>' for c, h in pairs)
    heard = "".join(f'<td class="{"diff" if c != h else ""}">{html.escape(h or "–")}</td>' for c, h in pairs)
    wrong = sum(1 for c, h in pairs if c != h)
    out = ('<h3>Phones</h3><div style="overflow-x:auto"><table class="apa-phones" id="apa-phones">'
           f"<tr><th>expected</th>{expected}</tr><tr><th>heard</th>{heard}</tr></table></div>"
           f'<p class="apa-note">{wrong} of {len(result["canonical_phones"])} canonical phones differ '
           "(highlighted; – : a phone missing on that side). Expected: CMUdict's first pronunciation of each word.</p>")
    if result["transcripts"]:
        out += (f'<p>words heard: <b>{html.escape(result["transcripts"]["word_transcript"])}</b></p>')
    else:
        out += ('<p class="apa-note">The model\'s transcript could not be read:</p>'
                f'<div class="apa-raw">{html.escape(result["raw"]["mdd"])}</div>')
    return out


def score_page(predictor, audio_path: str | None, text: str) -> tuple[str, str, str]:
    """(message, scores, phones) HTML for one request; every failure becomes a message."""
    try:
        result = predictor.score(audio_path, text or "")
    except PredictError as e:
        return _message(str(e)), "", ""
    except Exception as e:  # noqa: BLE001 - the page shows a line, the server log keeps the traceback
        log.exception("scoring failed")
        return _message(f"scoring failed ({type(e).__name__}: {e}); the server log has the details"), "", ""
    return "", scores_html(result), phones_html(result)


def adapter_html(adapter: Path, who: dict) -> str:
    """Which adapter answers (its path; `who`, the run's name, LoRA and base model: apa.reporting.runs.run_identity),
    and a notice when that base had random weights."""
    base = str(who["base"]) + (f" at {who['revision']}" if who.get("revision") else "")
    out = (f'<p class="apa-note" id="apa-adapter">Adapter <code>{html.escape(str(adapter))}</code>: run '
           f'<b>{html.escape(who["run"])}</b>, LoRA <b>{html.escape(who["lora"])}</b> (r={who["r"]}, '
           f'alpha={who["alpha"]}), base model <code>{html.escape(base)}</code>.</p>')
    if who["random_weights"]:
        out += ('<div class="apa-toy" id="apa-toy"><b>A toy:</b> this run was trained on a generated miniature with '
                f'random weights (<code>model={html.escape(str(who["model"]))}</code>), to check the pipeline. Its '
                "scores and phones mean nothing.</div>")
    return out


def build(predictor, title: str = "Pronunciation assessment"):
    import gradio as gr

    with gr.Blocks(title=title, analytics_enabled=False) as page:
        gr.Markdown(f"# {title}\nRecord yourself reading an English sentence (or upload a recording), give the "
                    "sentence, and press **Score**.")
        gr.HTML(adapter_html(predictor.adapter, predictor.identity), elem_id="apa-adapter-box")
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(sources=["microphone", "upload"], type="filepath", label="recording",
                                 elem_id="apa-audio")
                pick = gr.Dropdown(choices=sample_sentences(), value=None, label="pick a sentence (bundled sample)",
                                   elem_id="apa-pick")
                text = gr.Textbox(label="sentence read", placeholder="WE CALL IT BEAR", elem_id="apa-text")
                button = gr.Button("Score", variant="primary", elem_id="apa-score")
            with gr.Column():
                message = gr.HTML(elem_id="apa-message")
                scores = gr.HTML(elem_id="apa-scores-box", label="scores")
                phones = gr.HTML(elem_id="apa-phones-box", label="phones")
        pick.change(lambda s: s or "", inputs=pick, outputs=text)
        button.click(lambda a, t: score_page(predictor, a, t), inputs=[audio, text], outputs=[message, scores, phones])
    return page


def port_in_use(host: str, port: int) -> None:
    """Refuse, in one line, a port another program listens on (or one this user may not bind)."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            in_use = e.errno in (errno.EADDRINUSE, errno.EACCES)
            fix = (f"another program uses it; pass --port {port + 1} (or another free port)" if in_use else
                   "this machine has no such address; pass --host 127.0.0.1 (this machine only) or one of its own")
            raise SystemExit(f"error: cannot serve on {host}:{port} ({e.strerror}): {fix}") from None
        except OverflowError as e:  # a port outside 0-65535
            raise SystemExit(f"error: cannot serve on {host}:{port} ({e}): pass a --port from 1024 to 65535") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", type=Path, required=True, help="final_model/ or checkpoint-epoch-N/ of a run")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    parser.add_argument("--port", type=int, default=7860, help="1-65535 (default 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    parser.add_argument("--max-new-tokens", type=positive,
                        help="longest answer per task (default: evaluation's, 40 for APA and 160 for MDD)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise SystemExit("the app needs Gradio: pip install -e '.[app]'") from None
    port_in_use(args.host, args.port)  # before the model loads: Gradio's own error is a traceback
    try:
        predictor = Predictor(args.adapter, args.max_new_tokens)
    except PredictError as e:
        raise SystemExit(f"error: {e}") from None
    page = build(predictor)
    # quiet: Gradio's own lines would tell to set `share=True` in launch(); this command's flag is --share
    _, local_url, _ = page.launch(server_name=args.host, server_port=args.port, share=args.share, css=CSS,
                                  ssr_mode=False, quiet=True, prevent_thread_lock=True)
    print(launch_message(local_url, args), flush=True)
    page.block_thread()  # until Ctrl-C


def launch_message(local_url: str, args: argparse.Namespace) -> str:
    """What the command prints once the page is up (Gradio itself prints the public link when --share made one)."""
    lines = [f"* Running on local URL:  {local_url}"]
    if not args.share:
        lines.append(f"* For a public link too (gradio.live; anyone who has it can use the page): apa app --adapter "
                     f"{shlex.quote(str(args.adapter))} --share")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
