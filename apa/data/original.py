"""SpeechOcean762 in the corpus's original layout (github.com/jimbozhang/speechocean762, and the bundled sample):

    WAVE/SPEAKERxxxx/<id>.WAV
    train/ and test/: wav.scp, text, utt2spk (Kaldi files; wav.scp paths relative to the corpus root)
    resource/scores.json: utt id -> {text, accuracy, fluency, prosodic, total, words: [...]}
"""

from __future__ import annotations

import codecs
import json
import os
from collections import Counter
from pathlib import Path

from apa.data.labels import DataError, SkipReport, read_entry, skip_entry
from apa.data.records import Utterance

KALDI_COMMAND = "Kaldi pipe command in wav.scp (not supported)"  # the skip reason, wherever a wav.scp is read


def is_kaldi_command(value: str) -> bool:
    """A wav.scp value that is a command writing the audio to a pipe (`sox in.flac -t wav - |`), not a file."""
    return value.endswith("|")


def read_corpus_text(path: Path) -> str:
    """A text file of the corpus as UTF-8 (whatever the locale), a byte order mark at its start accepted; bytes that are
    not UTF-8 stop the run naming `path:line`, the byte offset and the byte."""
    data = path.read_bytes()
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        offset = bom + e.start
        line = data.count(b"\n", 0, offset) + 1
        column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 at byte offset {offset} (byte {column} of the line: "
                        f"0x{data[offset]:02x}, {e.reason}); the corpus files are UTF-8: re-save this one as UTF-8"
                        ) from None


def read_kaldi_map(path: Path) -> dict[str, str]:
    """A Kaldi table (wav.scp, text, utt2spk): id -> the rest of its line; a repeated id stops the run, naming
    `path:line`."""
    return {utt_id: value for utt_id, (_, value) in read_kaldi_lines(path).items()}


def read_kaldi_lines(path: Path) -> dict[str, tuple[int, str]]:
    """`read_kaldi_map` with line numbers: id -> (its line, the rest of the line)."""
    if not path.is_file():
        root, split = path.parent.parent, path.parent.name
        splits = sorted(p.parent.name for p in root.glob(f"*/{path.name}")) if root.is_dir() else []
        if splits:  # the corpus is there, the split is not: name the ones it has
            raise DataError(f"the corpus at {root} has no split {split!r} ({path} not found): its splits are "
                            f"{', '.join(splits)} (data.train_split, data.test_split)")
        raise DataError(f"{path} not found: data.path must point at the corpus root (WAVE/, train/, test/, resource/)")
    out: dict[str, tuple[int, str]] = {}
    # lines end at "\n" only (as Kaldi reads them), so that line numbers are an editor's; "\r" is stripped with the
    # other whitespace
    for n, line in enumerate(read_corpus_text(path).split("\n"), 1):
        fields = line.split(maxsplit=1)  # Kaldi: "<id> <value>", space or tab separated
        if not fields:
            continue
        if fields[0] in out:
            raise DataError(f"{path}:{n}: duplicate id {fields[0]}")
        out[fields[0]] = (n, fields[1].strip() if len(fields) > 1 else "")
    return out


def read_scores(path: Path) -> dict:
    """resource/scores.json: utt id -> entry. Not JSON stops the run naming the file, line and column; so do a
    top level that is not an object and an utterance id given twice (JSON keeps the last one silently)."""
    objects_with_duplicates: list[tuple[int, list[str]]] = []
    calls = 0

    def pairs(items: list[tuple[str, object]]) -> dict:
        nonlocal calls
        calls += 1
        out = dict(items)
        if len(out) < len(items):
            counts = Counter(key for key, _ in items)
            objects_with_duplicates.append((calls, [key for key, n in counts.items() if n > 1]))
        return out

    try:
        labels = json.loads(read_corpus_text(path), object_pairs_hook=pairs)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg}, line {e.lineno} column {e.colno}): "
                        "fix the file, or fetch the corpus's scores.json again") from None
    if not isinstance(labels, dict):
        raise DataError(f"{path} holds a JSON {type(labels).__name__}, not an object of utterance id -> labels")
    top = [keys for call, keys in objects_with_duplicates if call == calls]  # the top level is the last object closed
    if top:
        shown = ", ".join(top[0][:10]) + (" ..." if len(top[0]) > 10 else "")
        raise DataError(f"{path}: utterance id(s) given more than once: {shown}; JSON would keep the last silently: "
                        "keep one entry per utterance")
    return labels


def read_original_layout(root: str | Path, split: str, report: SkipReport,
                         on_label_mismatch: str = "error") -> list[Utterance]:
    """Utterances of one split; entries with bad labels, or whose wav.scp or utt2spk line cannot be used, are skipped
    and counted in `report`."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data.path={root} is not a folder: point it at a SpeechOcean762 copy in the original layout")
    wavs = read_kaldi_lines(root / split / "wav.scp")
    if not (root / split / "utt2spk").is_file():
        raise DataError(f"{root / split / 'utt2spk'} not found: the original layout names each utterance's speaker "
                        "there (`<id> <speaker>` lines); speakers decide the validation split and the test bootstrap")
    speakers = read_kaldi_lines(root / split / "utt2spk")
    scores_path = root / "resource" / "scores.json"
    if not scores_path.is_file():
        raise DataError(f"{scores_path} not found: the original layout keeps the labels in resource/scores.json")
    labels = read_scores(scores_path)
    files: dict[str, tuple[str, str]] = {}  # audio file -> (id, `split/wav.scp:line`) of the first line naming it
    out = []
    for utt_id, (n, rel) in wavs.items():
        report.total += 1
        problem = (_wav_scp_problem(root, f"{split}/wav.scp:{n}", utt_id, rel, files)
                   or _speaker_problem(f"{split}/utt2spk", utt_id, speakers.get(utt_id)))
        if problem:
            skip_entry(report, utt_id, labels.get(utt_id), *problem)
            continue
        if utt_id not in labels:
            report.skip(utt_id, "id in wav.scp but not in scores.json")
            continue
        utt = read_entry(utt_id, labels[utt_id], speakers[utt_id][1], str(root / rel), report, on_label_mismatch)
        if utt is not None:
            out.append(utt)
    return out


def _wav_scp_problem(root: Path, where: str, utt_id: str, rel: str,
                     files: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    """(reason, detail) why the wav.scp line `where` (`<id> <file>`) cannot give `utt_id`'s audio, or None; `files`
    notes which line named each file first."""
    if is_kaldi_command(rel):
        return KALDI_COMMAND, (f"{where}: `{rel}`: give the audio file's path instead (run the command once, writing "
                               "a .wav, and list that file)")
    path = root / rel
    if len(rel.split()) > 1 and not path.is_file():  # a path with a space that exists is a path with a space
        return "more than two fields in a wav.scp line", (
            f"{where}: read as id {utt_id!r} and file {rel!r}, which does not exist. Kaldi fields are separated by "
            "spaces, so an utterance id cannot hold one: rename it (in wav.scp, utt2spk and scores.json); if the "
            "space is in the file's path, that file is missing")
    # Two ids naming one file: a copy-paste error, and one id's labels now describe another recording. A counted skip
    # of the later id, not a warning: trained on (or scored against, in the test split) those labels would teach (or
    # measure) a wrong answer; the skip is logged naming both ids and the file, counted against data.max_bad_fraction,
    # and stops a test split by default. The first line is kept: a copied line usually lands below its original.
    first = files.setdefault(os.path.normcase(os.path.realpath(path)), (utt_id, where))
    if first[0] != utt_id:
        return "audio file of another utterance", (
            f"{where}: {rel} is also {first[0]}'s ({first[1]}): one of the two lines is a copy-paste error, and "
            f"{utt_id}'s labels would describe {first[0]}'s recording. Fix wav.scp")
    return None


def _speaker_problem(where: str, utt_id: str, line: tuple[int, str] | None) -> tuple[str, str] | None:
    """(reason, detail) why utt2spk does not give `utt_id`'s speaker, or None. An utterance without one is skipped,
    not read with an empty speaker: speakers decide which utterances data.validation_fraction holds out (whole
    speakers, so that validation measures new voices) and what the test bootstrap resamples, and every id without
    a speaker would become one made-up speaker of them all."""
    if line is None:
        return "id not in utt2spk", (f"add `{utt_id} <speaker>` to {where}: speakers decide the validation split "
                                     "and the test bootstrap")
    n, speaker = line
    if len(speaker.split()) != 1:
        return "not one speaker id in utt2spk", (
            f"{where}:{n}: `{utt_id} {speaker}`: each line is `<utterance id> <speaker id>`, one word each (an id "
            "cannot hold a space)")
    return None
