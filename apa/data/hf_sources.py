"""SpeechOcean762 from Hugging Face `datasets`: the hub's parquet (`mispeech/speechocean762`) or a
`save_to_disk` folder. Both become the same Utterance records as the original layout.

Audio is read undecoded (`Audio(decode=False)`): `datasets` would otherwise decode through torchcodec/FFmpeg.
Embedded bytes are written once into a cache folder as the files they were, so that everything downstream reads
audio by path with soundfile; a dataset built from local files may hold only the path, which is used as is. A cached
file is named by its content's digest as well as its file name: a dataset rebuilt at the same path with other audio
gets other files, never the stale ones.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from apa.data.labels import DataError, SkipReport, read_entry
from apa.data.records import APA_ASPECTS, Utterance


def _audio_cache(tag: str, split: str) -> Path:
    from apa.constants import cache_root

    return cache_root() / "audio" / tag / split


def _materialise(audio: dict, folder: Path) -> str:
    """A readable path for an undecoded audio cell: its own path, or its bytes written (atomically) to the cache, in a
    file named `<stem>.<digest of the bytes><suffix>`: the same bytes reuse the file, other bytes get their own."""
    data = audio.get("bytes")
    if not data:
        return audio["path"]
    name = Path(audio["path"])
    digest = hashlib.sha256(data).hexdigest()[:20]
    target = folder / f"{name.stem}.{digest}{name.suffix}"
    if not (target.is_file() and target.stat().st_size == len(data)):
        folder.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")  # per process: concurrent readers never collide
        tmp.write_bytes(data)
        os.replace(tmp, target)
    return str(target)


def read_hf_split(dataset, cache_tag: str, split: str, report: SkipReport,
                  on_label_mismatch: str = "error") -> list[Utterance]:
    """Rows of a `datasets.Dataset` in the hub's schema -> Utterances; the id is the audio file's stem."""
    from datasets import Audio

    if "audio" not in dataset.column_names:
        raise DataError(f"{cache_tag}: no 'audio' column; expected the mispeech/speechocean762 schema")
    dataset = dataset.cast_column("audio", Audio(decode=False))
    folder = _audio_cache(cache_tag, split)
    out, seen = [], set()
    for n, row in enumerate(dataset):
        report.total += 1
        audio = row["audio"] or {}
        if not audio.get("path"):
            report.skip(f"row {n}", "no audio path (the utterance id comes from it)")
            continue
        utt_id = Path(audio["path"]).stem
        if utt_id in seen:
            report.skip(utt_id, "duplicate id")
            continue
        seen.add(utt_id)
        entry = {key: row.get(key) for key in ("text", "words", *APA_ASPECTS) if row.get(key) is not None}
        utt = read_entry(utt_id, entry, str(row.get("speaker") or ""), _materialise(audio, folder), report,
                         on_label_mismatch)
        if utt is not None:
            out.append(utt)
    return out


def read_hub(hub_id: str, revision: str | None, split: str, report: SkipReport,
             on_label_mismatch: str = "error") -> list[Utterance]:
    from apa.offline import download_hint, go_offline, hub_unreachable

    unreachable = hub_unreachable() if not Path(hub_id).expanduser().exists() else None
    if unreachable:
        go_offline()  # the local cache only, at once: the client would retry for half a minute
    from datasets import load_dataset

    try:
        dataset = load_dataset(hub_id, split=split, revision=revision)
    except (FileNotFoundError, ValueError, OSError) as err:  # no such dataset, revision or split (datasets' own types)
        if unreachable:
            raise DataError(f"data.hub_id={hub_id} at data.revision={revision} is not in the local cache and the hub "
                            f"cannot be reached ({unreachable}): connect, or make a local copy "
                            f"(`{download_hint(hub_id, revision, 'dataset')}`, then data.hub_id=<dir>), "
                            "or use data.source=local data.path=<corpus root>") from err
        raise DataError(f"data.hub_id={hub_id} at data.revision={revision}, split {split!r}, cannot be read "
                        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}): check the id, "
                        "the commit and data.train_split/test_split") from err
    return read_hf_split(dataset, hub_id.strip("/").replace("/", "__"), split, report, on_label_mismatch)


def read_disk(path: str, split: str, report: SkipReport, on_label_mismatch: str = "error") -> list[Utterance]:
    from datasets import DatasetDict, load_from_disk

    if not Path(path).is_dir():
        raise DataError(f"data.path={path} is not a folder: data.source=disk needs a datasets.save_to_disk folder")
    try:
        loaded = load_from_disk(path)
    except FileNotFoundError as e:  # a folder, but not one save_to_disk wrote
        raise DataError(f"data.path={path} is not a datasets.save_to_disk folder ({e}): point it at one, or use "
                        "data.source=local for the corpus's original layout") from e
    if not isinstance(loaded, DatasetDict):  # one Dataset would serve as train and test alike
        raise DataError(f"data.path={path} holds a single Dataset without splits: it cannot be both the training and "
                        "the test split. Save one with splits: DatasetDict({'train': train, 'test': test})"
                        f".save_to_disk({str(path)!r}) (from datasets import DatasetDict)")
    if split not in loaded:
        raise DataError(f"{path} has splits {list(loaded)}, not {split!r}: set data.train_split/test_split")
    loaded = loaded[split]
    tag = "disk-" + hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:10]
    return read_hf_split(loaded, tag, split, report, on_label_mismatch)
