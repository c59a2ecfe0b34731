"""The utterance browser's data for report.html: each utterance once (speaker, text, clip, reference scores, the
canonical and annotated phones aligned), and each evaluated checkpoint's answers as arrays indexed like the
utterances (scores, or the raw answer where it did not parse; per phone, what was heard and the MDD outcome)."""

from __future__ import annotations

import base64
import json
import logging
import math
import os
from pathlib import Path
from urllib.parse import quote

from rapidfuzz.distance import Levenshtein

from apa.data.records import APA_ASPECTS
from apa.metrics import EPS, mdd_outcomes, normalise_phones, normalise_words
from apa.reporting.runs import read_answers
from apa.run_folder import PREDICTIONS, evaluations

log = logging.getLogger(__name__)

AUTO_EMBED_BYTES = 8 * 2**20  # --audio auto: embed every clip when all of them together are at most this
OUTCOME_CODES = {"ta": "a", "fr": "r", "fa": "f", "cd": "c", "de": "d"}  # one character per phone in the JSON
AUDIO_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".mp3": "audio/mpeg"}


def utterance_info(record: dict) -> dict[str, dict]:
    """id -> {speaker, audio_path, text} from the run's own test split (labels only, no decoding); {} when the data
    cannot be read here (another machine's path, the hub offline): the report then has no audio or speakers."""
    from omegaconf import OmegaConf

    from apa.data import SAMPLE_ROOT
    from apa.data.sources import load_configured_split

    data = dict(record.get("config", {}).get("data") or {})
    if not data:
        return {}
    if data.get("source") == "local" and data.get("name") == "sample" and not Path(str(data.get("path"))).is_dir():
        data["path"] = str(SAMPLE_ROOT)  # the bundled sample, from a run folder made in another checkout
    try:
        utterances = load_configured_split(OmegaConf.create(data), data.get("test_split", "test"), decode=False)
    except Exception as e:  # noqa: BLE001 - any failure here only costs the report its audio links
        log.warning("no audio or speakers in the report: the test split of %s cannot be read here (%s)",
                    data.get("path") or data.get("hub_id"), e)
        return {}
    return {u.id: {"speaker": u.speaker, "audio_path": u.audio_path, "text": u.text} for u in utterances}


class _Outcomes:
    """mdd_outcomes with a cache: final_model usually repeats the last epoch's answers, and the same canonical and
    annotated phones return for every checkpoint."""

    def __init__(self) -> None:
        self.cache: dict[tuple, tuple[list, float]] = {}

    def __call__(self, canonical: list[str], said: list[str], heard: list[str]) -> tuple[list, float]:
        key = (tuple(canonical), tuple(said), tuple(heard))
        if key not in self.cache:
            self.cache[key] = (mdd_outcomes(canonical, said, heard), _error_rate(said, heard))
        return self.cache[key]


def _error_rate(reference: list[str], hypothesis: list[str]) -> float:
    """One utterance's (S + D + I) / N, as apa.metrics.error_rate counts it (the edit distance), computed by
    rapidfuzz (jiwer's own engine) without jiwer's per-call text transforms: thousands of utterances per report."""
    return Levenshtein.distance(reference, hypothesis) / len(reference) if reference else math.nan


def _finite(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


def browser_data(runs: list[Path], records: dict[Path, dict], labels: dict[Path, str], out_dir: Path,
                 audio: str) -> dict:
    """Everything the browser shows, each utterance's reference once and each checkpoint's answers as arrays indexed
    like the utterances."""
    info: dict[str, dict] = {}
    seen_data: set[str] = set()
    for run in runs:
        key = json.dumps(records[run].get("config", {}).get("data"), sort_keys=True)
        if key not in seen_data:
            seen_data.add(key)
            for utt_id, values in utterance_info(records[run]).items():
                info.setdefault(utt_id, values)

    predictions: dict[str, list[dict]] = {}
    views = []
    for run in runs:
        for folder in evaluations(run):
            if not (folder / PREDICTIONS).is_file():
                continue
            key = f"{labels[run]}/{folder.name}"
            predictions[key] = read_answers(folder)
            views.append({"key": key, "run": labels[run], "checkpoint": folder.name})

    utts: dict[str, dict] = {}
    for rows in predictions.values():
        for r in rows:
            u = utts.setdefault(r["id"], {"id": r["id"]})
            ref = r.get("reference") or {}
            if r["task"] == "apa" and "ref" not in u:
                u["ref"] = [ref.get(a) for a in APA_ASPECTS]
            elif r["task"] == "mdd" and "canonical" not in u:
                u["words"] = ref.get("word_transcript", "")
                u["canonical"] = normalise_phones(ref.get("canonical_phones", ""))
                u["said"] = normalise_phones(ref.get("phoneme_transcript", ""))
    ids = sorted(utts)
    index = {utt_id: i for i, utt_id in enumerate(ids)}
    outcomes = _Outcomes()
    for u in utts.values():
        meta = info.get(u["id"], {})
        u["speaker"] = meta.get("speaker") or ""
        u["text"] = meta.get("text") or u.get("words", "")
        if "canonical" in u:  # the canonical-annotated alignment is the same for every checkpoint: stored once
            positions = outcomes(u["canonical"], u["said"], [])[0]
            u["pos"] = [[c, s] for c, s, _, _ in positions]
            u["mis"] = sum(1 for c, s in u["pos"] if c != s)
    audio_urls = _audio_urls({i: info.get(i, {}).get("audio_path") for i in ids}, out_dir, audio)

    per_view = {}
    for view in views:
        apa: list = [None] * len(ids)
        mdd: list = [None] * len(ids)
        for r in predictions[view["key"]]:
            i, pred, raw = index[r["id"]], r.get("prediction"), r.get("raw", "")
            if r["task"] == "apa":
                apa[i] = {"p": [pred.get(a) for a in APA_ASPECTS]} if pred else {"p": None, "raw": raw}
            else:
                u = utts[r["id"]]
                heard = normalise_phones(pred.get("phoneme_transcript", "")) if pred else []
                decisions, per = outcomes(u.get("canonical", []), u.get("said", []), heard)
                entry = {"h": " ".join(h for _, _, h, _ in decisions),
                         "o": "".join(OUTCOME_CODES[o] for *_, o in decisions),
                         "per": _finite(per)}
                if pred:
                    entry.update(w=pred.get("word_transcript", ""), p=" ".join(heard),
                                 wer=_finite(_error_rate(normalise_words(u.get("words", "")).split(),
                                                         normalise_words(pred.get("word_transcript", "")).split())))
                else:
                    entry.update(w=None, p=None, raw=raw)
                mdd[i] = entry
        per_view[view["key"]] = {"apa": apa, "mdd": mdd}
    rows = []
    for utt_id in ids:
        u = utts[utt_id]
        rows.append({"id": utt_id, "speaker": u["speaker"], "text": u["text"], "audio": audio_urls.get(utt_id),
                     "ref": u.get("ref"), "words": u.get("words"), "pos": u.get("pos"), "mis": u.get("mis")})
    return {"aspects": list(APA_ASPECTS), "eps": EPS, "views": views, "utts": rows, "answers": per_view}


def _audio_urls(paths: dict[str, str | None], out_dir: Path, mode: str) -> dict[str, str]:
    found = {i: Path(p) for i, p in paths.items() if p and Path(p).is_file()}
    if mode == "none" or not found:
        return {}
    if mode == "auto":
        mode = "embed" if sum(p.stat().st_size for p in found.values()) <= AUTO_EMBED_BYTES else "link"
    if mode == "embed":
        return {i: f"data:{AUDIO_TYPES.get(p.suffix.lower(), 'audio/wav')};base64,"
                   + base64.b64encode(p.read_bytes()).decode() for i, p in found.items()}
    return {i: quote(Path(os.path.relpath(p.resolve(), out_dir.resolve())).as_posix()) for i, p in found.items()}
