"""Score recordings with a fine-tuned adapter.

    apa predict --adapter outputs/runs/<run>/final_model --audio learner.wav --text "WE CALL IT BEAR"
    apa predict --adapter <run>/final_model --audio data/test/wav.scp --out scores.jsonl      (Kaldi text beside it)
    apa predict --adapter <run>/final_model --audio recordings/ --text-file sentences.txt --out scores.jsonl
    apa predict --adapter <run>/final_model --audio 'recordings/**/*.wav' --text-file sentences.txt --out scores.jsonl

One file: prints the APA scores, the word and phoneme transcripts, and a phone-by-phone comparison with the
sentence's canonical pronunciation (CMU dictionary), mispronounced phones marked. Many (a folder, a quoted glob, a
wav.scp; apa.serve.inputs says how ids and sentences are found): the model loads once, answers in evaluation's
batches and writes one JSON line per recording to --out (apa.serve.batch: the fields, skips, --resume).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from apa.errors import UserError, one_line_errors
from apa.serve.scoring import (  # noqa: F401  (phone_comparison: the page and the tests take it from here too)
    PredictError,
    canonical_pronunciation,
    phone_comparison,
    read_recording,
    result,
)
from apa.sft.prompts import TASKS

log = logging.getLogger(__name__)


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


def run_folder_for(adapter: Path) -> Path:
    """The run folder written by train.py that holds `adapter` (its training_config.json beside or in it)."""
    from apa.run_folder import TRAINING_RECORD, read_record

    for folder in (adapter.parent, adapter):
        if read_record(folder) is not None:
            return folder
    raise PredictError(f"{adapter} is not inside a run folder written by train.py (no {TRAINING_RECORD} beside it)")


def run_config_for(adapter: Path):
    """The resolved training config of the run folder that holds `adapter` (its training_config.json)."""
    from apa.run_folder import resolved_config

    return resolved_config(run_folder_for(adapter))


class Predictor:
    """A trained adapter loaded once (model, processor, the run's prompts) that scores recordings: one at a time
    (`score`, for `apa predict` and the page) or many in batches (`plan` and `answer`, apa.serve.batch). Either way
    the answers come as evaluation generates them: batches of one task each planned by evaluation's
    `plan_batches`, greedy decoding by `apa.sft.generation`, at most `max_new_tokens` per task (evaluation's limits
    unless an int is given for both)."""

    def __init__(self, adapter: Path, max_new_tokens: int | None = None, batch_size: int | None = None,
                 max_batch_tokens: int | None = None) -> None:
        from apa.checkpoint.adapters import load_for_eval
        from apa.config import EvalConfig, MaxNewTokens
        from apa.reporting.runs import run_identity
        from apa.sft.collate import SpeechSFTCollator

        adapter = adapter_folder(adapter)
        self.adapter = adapter
        self.run_dir = run_folder_for(adapter)
        self.cfg = run_config_for(adapter)
        self.identity = run_identity(self.run_dir)  # run, LoRA, base model, random weights: what the page shows
        limits = MaxNewTokens()
        self.max_new_tokens = ({t: max_new_tokens for t in TASKS} if max_new_tokens is not None
                               else {"apa": limits.apa, "mdd": limits.mdd})
        self.batch_size = batch_size or EvalConfig.batch_size
        self.max_batch_tokens = max_batch_tokens or EvalConfig.max_batch_tokens
        # the run's own limit on clip length (data.max_audio_seconds): longer clips were never trained on
        self.max_seconds = self.cfg.data.get("max_audio_seconds")
        self.model, self.processor = load_for_eval(self.cfg.model, adapter)
        self.batcher = SpeechSFTCollator(self.processor, feature_cache_mb=self.cfg.data.get("feature_cache_mb", 1024))

    def rows(self, recording_id: str, audio_path: str) -> list[dict]:
        """The recording's two generation rows (APA, MDD), with the run's prompts."""
        from apa.sft.prompts import user_content

        instructions = {"apa": self.cfg.prompts.apa, "mdd": self.cfg.prompts.mdd}
        return [{"id": recording_id, "task": task, "audio_path": str(audio_path),
                 "user_content": user_content(task, instructions, self.processor.tokenizer.audio_token)}
                for task in TASKS]

    def plan(self, rows: list[dict]) -> list[list[dict]]:
        """Evaluation's batches for `rows`: one task each, in order of length, within the size and token limits."""
        from apa.evaluation.predictions import plan_batches, prompt_lengths

        return plan_batches(rows, self.batch_size, prompt_lengths(rows, self.batcher), self.max_batch_tokens,
                            self.max_new_tokens)

    def answer(self, batch: list[dict], audio: list | None = None) -> list[str]:
        """The raw answers of one planned batch (`audio`: its clips decoded, instead of reading the rows' paths)."""
        from apa.sft.generation import generate_answers

        return generate_answers(self.model, self.processor, batch, self.max_new_tokens[batch[0]["task"]], audio,
                                batcher=self.batcher, disable_compile=True)

    def score(self, audio_path: Path | str | None, text: str) -> dict:
        """Scores, transcripts, raw answers and the phone comparison for one recording of `text`."""
        canonical = canonical_pronunciation(text)
        audio = read_recording(audio_path, self.max_seconds)
        raws = {}
        for batch in self.plan(self.rows(Path(audio_path).stem, str(audio_path))):
            raws[batch[0]["task"]] = self.answer(batch, [audio])[0]
        return result(canonical, raws)


def warn_if_toy(adapter: Path, cfg) -> None:
    from apa.reporting.runs import random_weights

    if random_weights(cfg.model):
        log.warning("note: %s was trained on a generated miniature with random weights (model=%s): a toy that checks "
                    "the pipeline; its scores mean nothing", adapter, cfg.model.name)


def predict(adapter: Path, audio_path: Path, text: str, max_new_tokens: int | None = None) -> dict:
    # bad input fails before the model loads
    canonical_pronunciation(text)
    cfg = run_config_for(adapter_folder(adapter))
    read_recording(audio_path, cfg.data.get("max_audio_seconds"))
    warn_if_toy(adapter_folder(adapter), cfg)
    return Predictor(adapter, max_new_tokens).score(audio_path, text)


def positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of at least 1")
    return int(value)


def predict_many(args: argparse.Namespace) -> int:
    """Many recordings (a folder, a glob, a wav.scp) into --out, one JSON line each (apa.serve.batch)."""
    from apa.serve.batch import check_out, check_recordings, resumed, summary, write_scores
    from apa.serve.inputs import find_recordings

    if args.out is None:
        raise PredictError(f"--audio {args.audio} names many recordings: pass --out <file>.jsonl for their scores "
                           "(one JSON line per recording)")
    recordings = find_recordings(args.audio, args.text, args.text_file)
    check_out(args.out, args.resume)
    adapter = adapter_folder(args.adapter)
    cfg = run_config_for(adapter)
    plan = check_recordings(recordings, cfg.data.get("max_audio_seconds"), resumed(args.out, adapter))
    if not plan.todo:
        if plan.done:  # everything is there already
            print(summary(plan, {"scored": 0}, args.out))
            return 0
        raise PredictError(f"none of the {len(recordings)} recordings can be scored: {plan.skipped.summary()}")
    warn_if_toy(adapter, cfg)
    predictor = Predictor(adapter, args.max_new_tokens, args.batch_size, args.max_batch_tokens)
    print(summary(plan, write_scores(predictor, plan, args.out), args.out))
    return 0


def print_one(out: dict) -> None:
    scores = out["scores"]
    print("APA scores:", json.dumps(scores) if scores else f"(unparsed answer: {out['raw']['apa']!r})")
    if out["transcripts"]:
        print("words:     ", out["transcripts"]["word_transcript"])
        print("phonemes:  ", out["transcripts"]["phoneme_transcript"])
    else:
        print(f"transcripts: (unparsed answer: {out['raw']['mdd']!r})")
    print(out["comparison"])


@one_line_errors  # Ctrl-C and a full disk: one line too
def main(argv: list[str] | None = None) -> int:
    from apa.serve.inputs import check_not_url, is_many

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", type=Path, required=True, help="final_model/ or checkpoint-epoch-N/ of a run")
    parser.add_argument("--audio", required=True,
                        help="the recording (WAV/FLAC/OGG/MP3, any rate); or many: a folder, a quoted glob "
                             "('clips/*.wav', ** for subfolders) or a Kaldi wav.scp")
    parser.add_argument("--text", help="the sentence the learner read (for many recordings: read in every one)")
    parser.add_argument("--text-file", type=Path,
                        help="each recording's sentence: `<id> <sentence>` lines (Kaldi text; the id is the wav.scp "
                             "id or the file name without extension) or JSON lines with id (or file_name) and text; "
                             "a wav.scp's own `text` beside it is used without this")
    parser.add_argument("--out", type=Path, help="write one JSON line per recording here (needed for many "
                                                 "recordings); an existing file is never overwritten")
    parser.add_argument("--resume", action="store_true", help="continue an --out file: score only what it lacks")
    parser.add_argument("--batch-size", type=positive, help="the most answers per batch (default: evaluation's, 256)")
    parser.add_argument("--max-batch-tokens", type=positive,
                        help="the most tokens per batch, rows x (prompt + answer) (default: evaluation's, 32768)")
    parser.add_argument("--max-new-tokens", type=positive,
                        help="longest answer per task (default: evaluation's, 40 for APA and 160 for MDD)")
    args = parser.parse_args(argv)
    try:
        check_not_url(args.audio)
        if args.out is not None or is_many(args.audio):
            return predict_many(args)
        if args.text_file is not None:
            raise PredictError("--text-file gives the sentences of many recordings: for one file pass --text, or "
                               "--out to write its line")
        out = predict(args.adapter, Path(args.audio), args.text or "", args.max_new_tokens)
    except UserError as e:  # also a model that cannot load (ModelLoadError), a full disk
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_one(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
