"""Which recordings `apa predict` scores, and the sentence each one read.

`--audio` names one file, a folder (searched with its subfolders for audio files), a glob (quoted, so that the shell
leaves it to us; `**` reaches into subfolders), or a Kaldi `wav.scp` (`<id> <path>` lines). A recording's id is its
wav.scp id, else its file name without the extension. The sentences come from `--text` (one sentence for every
recording) or `--text-file`, either Kaldi `text` lines (`<id> <sentence>`, space or tab after the id: a two-column
TSV is the same) or JSON Lines (`{"id": ..., "text": ...}`, or `file_name` instead of `id`, as in the
`metadata.jsonl` of a Hugging Face audio folder). A wav.scp with a Kaldi `text` beside it (a Kaldi data folder)
needs neither.
"""

from __future__ import annotations

import glob
import json
import re
from dataclasses import dataclass
from pathlib import Path

from apa.data.original import is_kaldi_command, read_kaldi_map
from apa.serve.scoring import PredictError

# what soundfile (libsndfile) decodes, matched case-insensitively (the corpus's own files are .WAV)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif")
KALDI_LIST = ".scp"
TEXT_BESIDE_SCP = "text"  # a Kaldi data folder: wav.scp and text side by side
JSON_LINES = (".jsonl", ".json")


@dataclass(frozen=True)
class Recording:
    id: str
    audio: str  # the path to read (a wav.scp line's own text when it is a command)
    text: str | None  # None: no sentence found for this id


def check_not_url(audio: str) -> None:
    if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*://", audio):
        raise PredictError(f"--audio {audio} is a URL: download the recording first and pass its file (or a folder, a "
                         "quoted glob or a wav.scp of recordings)")


def _is_glob(value: str) -> bool:
    return any(c in value for c in "*?[")


def is_many(audio: str) -> bool:
    """Whether `--audio` names many recordings (a folder, a glob or a wav.scp) rather than one file."""
    path = Path(audio)
    return path.is_dir() or (path.is_file() and path.suffix.lower() == KALDI_LIST) or (
        not path.exists() and _is_glob(audio))


def _audio_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise PredictError(f"--audio {folder}: no audio files in it or its subfolders (looked for "
                         f"{', '.join(AUDIO_SUFFIXES)}); pass the folder that holds the recordings")
    return files


def _by_stem(files: list[Path]) -> list[tuple[str, str]]:
    seen: dict[str, Path] = {}
    for path in files:
        if path.stem in seen:
            raise PredictError(f"two recordings have the id {path.stem} ({seen[path.stem]} and {path}): a file's id is "
                             "its name without the extension. Score the folders one at a time, or list the files "
                             "with their own ids in a wav.scp")
        seen[path.stem] = path
    return [(stem, str(path)) for stem, path in seen.items()]


def _scp_path(value: str, scp: Path) -> str:
    """A wav.scp path as Kaldi reads it (relative to the current folder), else relative to the folder that holds
    wav.scp's folder (SpeechOcean762 and the bundled sample: paths relative to the corpus root), else to wav.scp's
    own folder; a Kaldi command (`… |`) is kept as written and skipped later."""
    if is_kaldi_command(value) or Path(value).is_absolute():
        return value
    for base in (Path.cwd(), scp.parent.parent, scp.parent):
        if (base / value).is_file():
            return str(base / value)
    return value


def _listed(audio: str) -> tuple[list[tuple[str, str]], Path | None]:
    """(id, audio path) pairs for `--audio`, and the wav.scp they came from (None otherwise)."""
    path = Path(audio)
    check_not_url(audio)
    if path.is_dir():
        return _by_stem(_audio_files(path)), None
    if path.is_file() and path.suffix.lower() == KALDI_LIST:
        entries = read_kaldi_map(path)
        if not entries:
            raise PredictError(f"--audio {path}: no recordings listed (a wav.scp holds `<id> <path>` lines)")
        return [(utt_id, _scp_path(value, path)) for utt_id, value in entries.items()], path
    if not path.exists() and _is_glob(audio):
        files = sorted(Path(p) for p in glob.glob(audio, recursive=True) if Path(p).is_file())
        if not files:
            raise PredictError(f"--audio {audio!r} matches no file: check the pattern (quote it, so that the shell "
                             "passes it on unexpanded)")
        return _by_stem(files), None
    return [(path.stem, audio)], None  # one file (a missing one is reported, as a skip, when it is read)


def read_sentences(text_file: Path) -> dict[str, str]:
    """id -> sentence from Kaldi `text` lines, or from JSON Lines (`id` or `file_name`, and `text`)."""
    if text_file.is_dir():
        raise PredictError(f"--text-file {text_file} is a folder: pass the file of `<id> <sentence>` lines (Kaldi "
                         "text) or of JSON lines")
    if not text_file.is_file():
        raise PredictError(f"--text-file {text_file}: no such file")
    if text_file.suffix.lower() not in JSON_LINES:
        return read_kaldi_map(text_file)
    sentences: dict[str, str] = {}
    for n, line in enumerate(text_file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            key = str(entry["id"]) if "id" in entry else Path(entry["file_name"]).stem
            sentence = entry["text"]
        except (ValueError, KeyError, TypeError):
            raise PredictError(f"{text_file}:{n}: not a JSON object with `id` (or `file_name`) and `text`") from None
        if not isinstance(sentence, str):
            raise PredictError(f"{text_file}:{n}: `text` is {type(sentence).__name__}, not the sentence as a string")
        if key in sentences:
            raise PredictError(f"{text_file}:{n}: id {key} is given twice")
        sentences[key] = sentence
    return sentences


def find_recordings(audio: str, text: str | None = None, text_file: Path | None = None) -> list[Recording]:
    """The recordings `--audio` names, each with its sentence (None where none is given: skipped when scored)."""
    if text is not None and text_file is not None:
        raise PredictError("--text and --text-file both given: --text is one sentence for every recording, "
                         "--text-file one per id; pass one of them")
    listed, scp = _listed(audio)
    if text is not None:
        return [Recording(utt_id, path, text) for utt_id, path in listed]
    if text_file is None and scp is not None and (scp.parent / TEXT_BESIDE_SCP).is_file():
        text_file = scp.parent / TEXT_BESIDE_SCP
    if text_file is None:
        raise PredictError(f"--audio {audio}: no sentences given: pass --text-file (`<id> <sentence>` lines, Kaldi's "
                         "text, or JSON lines) or --text (one sentence read in every recording)")
    sentences = read_sentences(text_file)
    return [Recording(utt_id, path, sentences.get(utt_id)) for utt_id, path in listed]
