"""predictions.jsonl, the evaluation's contract with everything after it, and metrics.json beside it.

One object per line:
    {"id", "task": "apa"|"mdd", "reference": {...}, "prediction": {...}|null, "raw": "<generated text>"}
An MDD reference holds word_transcript, phoneme_transcript (what was said), canonical_phones and phone_truth (per
canonical phone what was said there, `<del>` for a deletion). test_split.json beside it: what the test split held
(utterances and canonical phones, skips by reason and id, data.limit, phone statistics).

Lines are appended batch by batch as soon as they exist; a rerun after a crash skips what is done and ends with the
same file as an uninterrupted run (batches are fixed in advance, so each is generated the same way). The reader is
strict: a malformed or repeated line is an error naming file and line.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
from contextlib import contextmanager
from pathlib import Path

from tqdm.auto import tqdm

from apa.data.records import APA_ASPECTS
from apa.errors import Interrupted, StopSignals, UserError, override_arg
from apa.metrics import compute_metrics
from apa.run_folder import (
    METRICS,
    PREDICTION_SHARD,
    PREDICTIONS,
    SPLIT_FILE,
    TRAIN_MEANS,
    prediction_shards,
    read_file,
    read_train_means,
    write_atomic,
    write_json,
)
from apa.sft.lengths import audio_tokens, clip_seconds
from apa.sft.prompts import PARSERS
from apa.uncertainty import RESAMPLES, SEED, SPEAKER, intervals

log = logging.getLogger(__name__)


class EvaluationError(UserError, RuntimeError):
    """Evaluation cannot run as asked; the message names the fix."""


def _complete_lines(path: Path, cut: bool = True) -> dict[tuple[str, str], bytes]:
    """(id, task) -> line of the complete lines of a predictions file (or shard), in file order; a torn last line (a
    crash mid-write) is left out and, with `cut`, cut off so the file stays valid JSONL."""
    if not path.exists():
        return {}
    lines: dict[tuple[str, str], bytes] = {}
    good_bytes = 0
    raw = path.read_bytes().split(b"\n")
    for n, line in enumerate(raw, 1):
        last = n == len(raw)  # the text after the final newline: empty, or a torn write
        try:
            rec = json.loads(line) if line.strip() else None
            key = None if rec is None else (rec["id"], rec["task"])
        except (ValueError, KeyError, TypeError):
            if last:
                break
            raise EvaluationError(
                f"{path}:{n}: not a prediction record, and not the last line (a crash tears only the last): the file "
                "is damaged. Delete it to generate the predictions again") from None
        if last and line.strip():
            break  # a whole record without its newline: written, but not known to be complete
        if key is not None:
            lines.setdefault(key, line + b"\n")
        good_bytes += len(line) + (0 if last else 1)
    if cut and good_bytes != path.stat().st_size:
        log.warning("%s: cutting off a torn last line (%d bytes; an evaluation stopped mid-write): its batch is "
                    "generated again", path, path.stat().st_size - good_bytes)
        with path.open("r+b") as f:
            f.truncate(good_bytes)
    return lines


def _done_keys(path: Path) -> set[tuple[str, str]]:
    """Keys already written; a torn last line is cut off."""
    return set(_complete_lines(path))


def prompt_lengths(rows: list[dict], batcher) -> list[int]:
    """Tokens of each row's generation prompt, audio included, without decoding audio: the prompt's text tokens as
    the collator builds them (`batcher.tokens`, tokenized once per distinct prompt) plus the clip's audio tokens from
    its header (apa.sft.lengths.audio_tokens, the processor's own rule)."""

    seconds = clip_seconds(row["audio_path"] for row in rows)
    out = []
    for row in rows:
        before, after = batcher.tokens.prompt(row["user_content"])
        out.append(len(before) + len(after) + audio_tokens(seconds[row["audio_path"]]))
    return out


def plan_batches(rows: list[dict], batch_size: int, lengths: list[int], max_batch_tokens: int | None = None,
                 max_new_tokens: dict[str, int] | None = None) -> list[list[dict]]:
    """Fixed batches of one task each, so that padding stays small: in order of `lengths` (prompt tokens per row,
    `prompt_lengths`), each batch as long as it holds at most `batch_size` rows and `max_batch_tokens` tokens, counted
    as rows x (its longest prompt + the task's max_new_tokens), which bounds the KV cache; a single row over the
    budget forms a batch of its own. The plan depends on the rows and these numbers alone, so a resumed run forms the
    same batches."""
    batches = []
    for task in ("apa", "mdd"):
        index = [i for i, r in enumerate(rows) if r["task"] == task]
        index.sort(key=lambda i: (lengths[i], rows[i]["id"]))
        new = (max_new_tokens or {}).get(task, 0)
        batch: list[int] = []
        for i in index:  # ascending: the row being added is the batch's longest
            if batch and (len(batch) >= batch_size
                          or (max_batch_tokens and (len(batch) + 1) * (lengths[i] + new) > max_batch_tokens)):
                batches.append([rows[j] for j in batch])
                batch = []
            batch.append(i)
        if batch:
            batches.append([rows[j] for j in batch])
    return batches


def generation_options(cfg) -> dict:
    """generate_predictions' keyword arguments from an evaluation config (EvalConfig)."""
    kwargs: dict = {"disable_compile": not cfg.get("compile", False)}
    if cfg.get("cache_implementation"):
        kwargs["cache_implementation"] = cfg.cache_implementation
    elif cfg.get("compile"):
        log.warning("compile=true has no effect without cache_implementation=static: transformers compiles the "
                    "decoding step only with a static cache")
    return {"max_batch_tokens": cfg.get("max_batch_tokens"), "generate_kwargs": kwargs}


def batch_cost(batch: list[dict], length: dict[tuple[str, str], int], max_new_tokens: dict[str, int]) -> int:
    """A batch's tokens as plan_batches counts them: rows x (its longest prompt + the task's max_new_tokens)."""
    return len(batch) * (max(length[(r["id"], r["task"])] for r in batch) + max_new_tokens.get(batch[0]["task"], 0))


def deal_batches(costs: list[int], todo: list[int], ranks: int) -> list[list[int]]:
    """Whole batches (indices into the plan) for each of `ranks` ranks, balanced by cost: the costliest batch first,
    each to the rank with the least so far (ties: the earlier batch, the lower rank); each rank's batches in plan
    order. A function of its arguments alone, so every rank deals the same."""
    shares: list[list[int]] = [[] for _ in range(ranks)]
    load = [0] * ranks
    for i in sorted(todo, key=lambda i: (-costs[i], i)):
        least = min(range(ranks), key=lambda r: (load[r], r))
        shares[least].append(i)
        load[least] += costs[i]
    return [sorted(share) for share in shares]


def generate_predictions(model, processor, rows: list[dict], path: Path, batch_size: int,
                         max_new_tokens: dict[str, int], feature_cache_mb: float = 1024,
                         max_batch_tokens: int | None = None, generate_kwargs: dict | None = None) -> list[dict]:
    """predictions.jsonl for `rows`, batch by batch (plan_batches: at most `batch_size` rows and, if given,
    `max_batch_tokens` tokens each); lines already in the file are kept and their batches skipped.

    Data parallel (a torch.distributed group of several ranks, apa.distributed): every rank plans the same batches;
    rank 0 finds the batches still to do (in predictions.jsonl and every rank's shard, whatever world size wrote
    them) and deals them to the ranks (`deal_batches`); each rank appends its answers to its own shard
    (predictions.rank-<R>.jsonl), a whole batch per write; rank 0 merges, once all are done. Every batch is composed
    as in one process, so the merged file is the one a single process writes. Returns the records on rank 0 (the
    only rank with a single process), [] on the others."""
    from apa import distributed
    from apa.sft.collate import SpeechSFTCollator

    batcher = SpeechSFTCollator(processor, feature_cache_mb=feature_cache_mb)  # one cache for both tasks' batches
    lengths = prompt_lengths(rows, batcher)
    batches = plan_batches(rows, batch_size, lengths, max_batch_tokens, max_new_tokens)
    rank, ranks = distributed.group_rank(), distributed.group_size()

    def survey() -> tuple[list[int], bool]:  # rank 0, before anyone writes: what is done, and whether to shard
        path.parent.mkdir(parents=True, exist_ok=True)
        done = set(_complete_lines(path))
        shards = prediction_shards(path.parent)
        for shard in shards:
            done |= set(_complete_lines(shard))
        todo = [i for i, b in enumerate(batches) if any((r["id"], r["task"]) not in done for r in b)]
        if done:
            log.info("%s: %d predictions already there, %d of %d batches to go (%d rank(s))", path, len(done),
                     len(todo), len(batches), ranks)
        return todo, done, ranks > 1 or bool(shards)

    todo, done, sharded = distributed.on_rank_zero(survey) or (None, None, None)
    todo, sharded = distributed.broadcast((todo, sharded))
    if not sharded:  # one process, no shards of an earlier data-parallel launch: straight into predictions.jsonl
        _generate(model, processor, [batches[i] for i in todo], path, done, batcher, max_new_tokens, generate_kwargs,
                  total=len(rows), desc=f"generating {path.parent.name}")
        return read_predictions(path)
    length = {(r["id"], r["task"]): n for r, n in zip(rows, lengths, strict=True)}
    mine = deal_batches([batch_cost(b, length, max_new_tokens) for b in batches], todo, ranks)[rank]
    shard = path.with_name(PREDICTION_SHARD.format(rank))
    log.info("%s: rank %d of %d generates %d of the %d batches to go", path.parent.name, rank, ranks, len(mine),
             len(todo))
    _generate(model, processor, [batches[i] for i in mine], shard, set(), batcher, max_new_tokens, generate_kwargs,
              total=sum(len(batches[i]) for i in mine), desc=f"generating {path.parent.name} (rank {rank})")
    distributed.barrier()  # every shard complete
    distributed.on_rank_zero(lambda: merge_shards(path, batches))
    return read_predictions(path) if rank == 0 else []


def _generate(model, processor, batches: list[list[dict]], path: Path, done: set, batcher, max_new_tokens: dict,
              generate_kwargs: dict | None, total: int, desc: str) -> None:
    """Append the answers of `batches` to `path`, one write per batch, each on disk before the next starts."""
    from apa.sft.generation import generate_answers

    path.parent.mkdir(parents=True, exist_ok=True)
    todo_rows = sum(1 for b in batches for r in b if (r["id"], r["task"]) not in done)
    # an evaluation's signals (stop_on_signal) let the batch in progress finish; uninstalled ones never receive any
    signals = StopSignals.active() or StopSignals()
    with signals.deferred("writing the answers of this batch"), path.open("a") as out, \
            tqdm(total=total, initial=total - todo_rows, desc=desc, unit="ex") as bar:
        for batch in batches:
            task = batch[0]["task"]
            raws = generate_answers(model, processor, batch, max_new_tokens=max_new_tokens[task], batcher=batcher,
                                    **(generate_kwargs or {}))
            lines = []
            for row, raw in zip(batch, raws, strict=True):
                if (row["id"], task) in done:
                    continue
                record = {"id": row["id"], "task": task, "reference": row["reference"],
                          "prediction": PARSERS[task](raw), "raw": raw}
                lines.append(json.dumps(record, ensure_ascii=False) + "\n")
            out.write("".join(lines))  # one write per batch, then to disk: a crash loses at most this batch
            out.flush()
            os.fsync(out.fileno())
            bar.update(len(lines))
            if signals.received:
                raise KeyboardInterrupt  # this batch is on disk: stop_on_signal says what is kept
    if signals.received:  # it came after the last batch's check, while the file was closing: every answer is kept
        raise KeyboardInterrupt


@contextmanager
def stop_on_signal(folder: Path, overrides: list[str], pinned: dict):
    """SIGTERM or Ctrl-C during an evaluation into `folder` (apa.errors.StopSignals, as training uses them): the
    batch being generated is finished and written, then the evaluation stops in one line saying how many answers
    are kept and the command that continues it (evaluate_command), which generates only what is missing; exit status
    128 + the signal. Outside generation (loading, scoring), or at a second signal, it stops at once: no answer
    written before is lost either way."""
    signals = StopSignals().install()
    try:
        yield
    except (Exception, KeyboardInterrupt):  # a signal's KeyboardInterrupt, or what it broke (a half-done import)
        if signals.received is None:
            raise
        raise Interrupted(f"stopped by {signals.name}: {kept_answers(folder)}. The same command continues it, "
                          f"generating only what is missing: `{evaluate_command(overrides, pinned)}`",
                          signals.received) from None
    finally:
        signals.restore()


def kept_answers(folder: Path) -> str:
    """How many answers the prediction files in `folder`'s subfolders hold (complete lines), for a message."""
    counts = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
        keys = set().union(*(_complete_lines(f, cut=False) for f in (sub / PREDICTIONS, *prediction_shards(sub))))
        if keys:
            counts[sub.name] = len(keys)
    if not counts:
        return f"no answer was written yet in {folder}"
    return (f"{sum(counts.values())} answers kept in {folder} ("
            + ", ".join(f"{name}: {n}" for name, n in counts.items()) + ")")


def evaluate_command(overrides: list[str], pinned: dict[str, object]) -> str:
    """The `python evaluate.py …` that repeats an evaluation: the `pinned` settings (quoted as apa.errors.override_arg
    quotes them) and the command's other overrides as typed."""
    from apa.command_line import override_keys

    rest = [shlex.quote(o) for o, key in zip(overrides, override_keys(overrides), strict=True) if key not in pinned]
    return " ".join(["python evaluate.py", *(override_arg(key, value) for key, value in pinned.items()), *rest])


def merge_shards(path: Path, batches: list[list[dict]]) -> None:
    """predictions.jsonl from itself and every shard beside it, in plan order (a single process's order), written
    atomically; then the shards are removed. Each answer is taken once (a line the file already has wins)."""
    lines: dict[tuple[str, str], bytes] = {}
    shards = prediction_shards(path.parent)
    for source in (path, *shards):
        for key, line in _complete_lines(source, cut=False).items():
            lines.setdefault(key, line)
    order = [(r["id"], r["task"]) for b in batches for r in b]
    missing = [key for key in order if key not in lines]
    if missing:
        raise EvaluationError(f"{path.parent}: {len(missing)} answers are in no shard after every rank finished "
                              f"(first: {missing[0][1]} of {missing[0][0]}); rerun the same command to generate them")
    merged = b"".join(lines[key] for key in order)
    if not shards and path.exists() and path.read_bytes() == merged:
        return
    write_atomic(path, merged.decode("utf-8"))
    for shard in shards:
        shard.unlink()


def read_predictions(path: Path) -> list[dict]:
    """The records of a predictions file; a malformed line or a repeated (id, task) is an error naming file and line
    (a repeated answer would be counted twice)."""
    if path.is_dir():
        inside = f" ({path / PREDICTIONS})" if (path / PREDICTIONS).is_file() else ""
        raise EvaluationError(f"{path} is a folder: give the {PREDICTIONS} file{inside} written by evaluate.py")
    if not path.is_file():
        raise EvaluationError(f"{path} not found: give a {PREDICTIONS} written by evaluate.py")
    records, seen = [], {}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                key = (rec["id"], rec["task"])
                rec["reference"], rec["prediction"]  # noqa: B018  (present, even if null)
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise EvaluationError(f"{path}:{n}: not a prediction record ({err}): each line must be a JSON object "
                                      "with id, task, reference, prediction") from None
            if key in seen:
                raise EvaluationError(f"{path}:{n}: {key[1]} answer for {key[0]} repeats line {seen[key]}; a "
                                      "prediction may appear once (were two evaluations written into one file?)")
            seen[key] = n
            records.append(rec)
    if not records:
        raise EvaluationError(f"{path} holds no prediction: nothing to score (an evaluation that was stopped before "
                              "its first batch? run it again)")
    return records


def score_file(path: Path, means: dict[str, float] | None = None, bootstrap=None) -> dict:
    """metrics.json beside a predictions file (training means from train_means.json beside it, if present; the
    split's size and speakers from test_split.json beside it, if present, else null), with a 95 % interval for each
    metric (apa.uncertainty; `bootstrap`: unit, resamples, seed, as conf/evaluate.yaml's; without the split's
    speakers the utterance bootstrap, named so). Written atomically."""
    predictions = read_predictions(path)
    means_file = path.parent / TRAIN_MEANS
    if means is None and means_file.exists():
        means = read_train_means(means_file)
    if means is None:
        apa = [r["reference"] for r in predictions if r["task"] == "apa"]
        means = {a: sum(r[a] for r in apa) / len(apa) for a in APA_ASPECTS} if apa else {}
        log.warning(f"no {TRAIN_MEANS} beside %s: imputing unparsed APA answers with the test-set mean", path)
    split_file = path.parent / SPLIT_FILE
    split = read_file(split_file, "Delete it and re-run the evaluation, which writes it again") \
        if split_file.exists() else None
    if split is None:
        log.warning("no %s beside %s: how many utterances and phones the test split held is unknown (null in "
                    "%s)", SPLIT_FILE, path, METRICS)
    metrics = compute_metrics(predictions, means, split)
    settings = dict(bootstrap or {})
    metrics.update(intervals(predictions, (split or {}).get("speakers"),
                             resamples=int(settings.get("resamples", RESAMPLES)), seed=int(settings.get("seed", SEED)),
                             unit=str(settings.get("unit", SPEAKER))))
    write_atomic(path.parent / METRICS, metrics_json(metrics))
    return metrics


def metrics_json(metrics: dict) -> str:
    """JSON text of `metrics`; an undefined value (NaN, infinity) becomes null, never a bare NaN (which is not JSON)."""
    defined = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()}
    return json.dumps(defined, indent=2, allow_nan=False)


def write_split_record(out_dir: Path, split: dict) -> None:
    write_json(out_dir / SPLIT_FILE, split)
