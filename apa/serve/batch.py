"""Many recordings scored with one load of the model: `apa predict --audio <folder | 'glob' | wav.scp> --out
scores.jsonl`.

Every recording is checked before the model loads (its file, its audio, its sentence): a missing or unreadable
file, a clip over the run's `data.max_audio_seconds`, an id without a sentence or a word CMUdict lacks is skipped,
counted by reason and named in the summary line. The rest are answered in evaluation's batches
(`Predictor.plan`: one task each, in order of length, within `--batch-size` and `--max-batch-tokens`), so each
answer is the one `evaluate.py` would give at the same settings. A recording's line is written once both its
answers exist, a batch's lines in one write, flushed to disk.

One JSON object per line:
    {"id", "audio", "text", "scores": {accuracy, fluency, prosodic, total} | null,
     "transcripts": {word_transcript, phoneme_transcript} | null, "parsed": {"apa": bool, "mdd": bool},
     "raw": {"apa": str, "mdd": str}, "canonical_phones": str, "phones_differ": int | null, "adapter": str}
`parsed` false: that answer did not read as the task's JSON (its fields are null; `raw` has the text).

An existing --out is never overwritten: it is refused, or continued with --resume (the recordings it holds are
skipped, a torn last line from a crash is cut off, and one written by another adapter is refused).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from apa.data.audio import AudioError, decode_audio
from apa.data.labels import SkipReport
from apa.data.original import KALDI_COMMAND, is_kaldi_command
from apa.serve.inputs import Recording
from apa.serve.scoring import PredictError, canonical_pronunciation, result
from apa.sft.prompts import TASKS

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """What a batch prediction will do, known before the model loads."""

    usable: list[tuple[Recording, list[str]]]  # each recording that can be scored, with its canonical phones
    done: set[str]  # ids already in --out (--resume): planned with the others, not written again
    skipped: SkipReport = field(default_factory=SkipReport)

    @property
    def todo(self) -> int:
        return sum(1 for rec, _ in self.usable if rec.id not in self.done)


def _read_out(out: Path) -> tuple[list[dict], int]:
    """The complete records of an existing --out, and the bytes they take: a last line without its newline (a
    crash mid-write) is not one of them; any other line that is not a JSON object is an error."""
    data = out.read_bytes()
    lines = data.split(b"\n")
    records, good = [], 0
    for n, line in enumerate(lines, 1):
        if n == len(lines):  # the text after the final newline: empty, or a torn write
            break
        good += len(line) + 1
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or "id" not in record:
            raise PredictError(f"{out}:{n}: not a line of `apa predict --out`, and not the last line (a crash tears "
                               "only the last): pass another --out")
        records.append(record)
    return records, good


def check_out(out: Path, resume: bool) -> None:
    """Refuse an --out that is a folder, or that exists without --resume (it is never overwritten)."""
    if out.is_dir():
        raise PredictError(f"--out {out} is a folder: pass a file name, e.g. --out {out / 'scores.jsonl'}")
    if out.exists() and not resume:
        raise PredictError(f"--out {out} already exists and is never overwritten: pass --resume to score only the "
                           "recordings it does not hold yet, or another --out")


def resumed(out: Path, adapter: Path) -> set[str]:
    """The ids an existing --out holds, to be left as they are (--resume). A torn last line (a crash mid-write) is
    cut off; a file with another adapter's scores is refused."""
    if not out.exists():
        return set()
    records, good = _read_out(out)
    other = next((r.get("adapter") for r in records if r.get("adapter") != str(adapter)), None)
    if records and other is not None:
        raise PredictError(f"--out {out} holds scores of another adapter ({other}), not of {adapter}: pass another "
                           "--out")
    size = out.stat().st_size
    if good != size:
        log.warning("%s: cutting off a torn last line (%d bytes; a prediction stopped mid-write)", out, size - good)
        with out.open("r+b") as f:
            f.truncate(good)
    return {r["id"] for r in records}


def check_recordings(recordings: list[Recording], max_seconds: float | None, done: set[str]) -> Plan:
    """Which recordings can be scored (their audio decodes within the run's length limit, their sentence is known
    to CMUdict); every other one is skipped, counted by reason, unless --out holds it already."""
    plan = Plan([], {rec.id for rec in recordings} & done)
    for rec in recordings:
        plan.skipped.total += 1
        problem = _problem(rec, max_seconds)
        if problem is None:
            plan.usable.append((rec, canonical_pronunciation(rec.text)))
        elif rec.id not in done:
            plan.skipped.skip(rec.id, *problem)
    return plan


def _problem(rec: Recording, max_seconds: float | None) -> tuple[str, str] | None:
    """(reason, detail) why `rec` cannot be scored, or None."""
    if is_kaldi_command(rec.audio):
        return KALDI_COMMAND, f"`{rec.audio}`: list the audio file's path instead"
    if rec.text is None:
        return "no sentence for this id", "add it to --text-file"
    try:
        canonical_pronunciation(rec.text)
        decode_audio(rec.audio, max_seconds=max_seconds)
    except AudioError as e:
        return e.kind, rec.audio
    except PredictError as e:  # an empty sentence, a word CMUdict lacks
        return "sentence not usable", str(e).split(". ")[0]
    return None


def record(rec: Recording, canonical: list[str], raws: dict[str, str], adapter: Path) -> dict:
    """One recording's line of --out."""
    out = result(canonical, raws)
    return {"id": rec.id, "audio": str(Path(rec.audio).resolve()), "text": rec.text, "scores": out["scores"],
            "transcripts": out["transcripts"],
            "parsed": {"apa": out["scores"] is not None, "mdd": out["transcripts"] is not None},
            "raw": out["raw"], "canonical_phones": " ".join(canonical),
            "phones_differ": sum(1 for c, h in out["alignment"] if c != h) if out["transcripts"] else None,
            "adapter": str(adapter)}


def ordered(batches: list[list[dict]]) -> list[list[dict]]:
    """The planned batches in an order that completes recordings early: by the position of each batch's first
    recording in the plan's length order (both tasks sort alike), APA before MDD."""
    rank: dict[str, int] = {}
    for batch in batches:
        for row in batch:
            rank.setdefault(row["id"], len(rank))
    return sorted(batches, key=lambda b: (min(rank[r["id"]] for r in b), TASKS.index(b[0]["task"])))


def write_scores(predictor, plan: Plan, out: Path) -> dict:
    """Answer every usable recording and append its line to `out`; returns the counts for the summary line. The
    batches are planned over every usable recording, those already in `out` included, so a resumed run forms the
    batches an uninterrupted one would; a batch whose recordings are all there is not generated again."""
    by_id = {rec.id: (rec, canonical) for rec, canonical in plan.usable}
    rows = [row for rec, _ in plan.usable for row in predictor.rows(rec.id, rec.audio)]
    batches = ordered(predictor.plan(rows)) if rows else []
    answers: dict[str, dict[str, str]] = {}
    counts = {"scored": 0, "apa": 0, "mdd": 0}
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with out.open("a", encoding="utf-8") as f, tqdm(total=plan.todo, desc=f"scoring into {out.name}", unit="rec",
                                                    file=sys.stderr) as bar:
        try:
            for batch in batches:
                if all(r["id"] in plan.done for r in batch):
                    continue
                for row, raw in zip(batch, predictor.answer(batch), strict=True):
                    answers.setdefault(row["id"], {})[row["task"]] = raw
                lines = []
                for utt_id in dict.fromkeys(r["id"] for r in batch):
                    if len(answers.get(utt_id, {})) < len(TASKS):
                        continue  # its other task's batch is still to come
                    raws = answers.pop(utt_id)
                    if utt_id in plan.done:
                        continue
                    line = record(*by_id[utt_id], raws, predictor.adapter)
                    lines.append(json.dumps(line, ensure_ascii=False) + "\n")
                    counts["scored"] += 1
                    counts["apa"] += line["parsed"]["apa"]
                    counts["mdd"] += line["parsed"]["mdd"]
                f.write("".join(lines))  # one write per batch, then to disk: a crash loses at most this batch
                f.flush()
                os.fsync(f.fileno())
                bar.update(len(lines))
        except KeyboardInterrupt:
            raise KeyboardInterrupt(f"interrupted: {len(plan.done) + counts['scored']} recordings are in {out}; the "
                                    "same command with --resume scores the rest") from None
    counts["seconds"] = time.perf_counter() - started
    return counts


def summary(plan: Plan, counts: dict, out: Path) -> str:
    """The line that ends a batch prediction: what was scored, how fast, how many answers parsed, what was skipped
    and why (each reason with an example)."""
    n, seconds = counts["scored"], counts.get("seconds")
    line = f"nothing left to score in {out}"
    if n:
        line = (f"scored {n} recording(s) into {out} in {seconds:.1f} s ({n / seconds:.2f}/s); answers parsed: "
                f"APA {counts['apa']}/{n}, MDD {counts['mdd']}/{n}")
    if plan.done:
        line += f"; {len(plan.done)} already there (--resume)"
    if plan.skipped.skipped:
        line += f"; {plan.skipped.summary()}"
    return line
