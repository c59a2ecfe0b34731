"""Turn an utterance into its two training examples (APA, MDD), and parse answers back.

Formatting and parsing live side by side so that what training teaches and what evaluation reads cannot drift.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass

from apa.constants import APA_TOKEN, MDD_TOKEN
from apa.data.records import APA_ASPECTS, Utterance

TASKS = ("apa", "mdd")
CONTROL_TOKEN = {"apa": APA_TOKEN, "mdd": MDD_TOKEN}


@dataclass(frozen=True)
class Example:
    """One supervised turn. Field names avoid TRL's reserved columns (prompt, completion, text, messages)."""

    id: str
    task: str
    audio_path: str
    user_content: str
    answer: str


def apa_target(utt: Utterance) -> dict[str, int]:
    return {aspect: int(utt.scores[aspect]) for aspect in APA_ASPECTS}


def mdd_target(utt: Utterance) -> dict[str, str]:
    """The word transcript is the prompted sentence; the phonemes are what was actually pronounced."""
    return {"word_transcript": utt.text, "phoneme_transcript": " ".join(utt.annotated_phones)}


def format_answer(target: dict) -> str:
    return json.dumps(target, ensure_ascii=False)


def user_content(task: str, instructions: dict[str, str], audio_token: str, control_token: bool = True) -> str:
    """Control token first (left out for the untrained baseline, as the paper ran it), then the instruction with the
    checkpoint's own audio placeholder in place of {audio}."""
    return (CONTROL_TOKEN[task] if control_token else "") + instructions[task].replace("{audio}", audio_token)


def build_examples(utt: Utterance, instructions: dict[str, str], audio_token: str,
                   control_token: bool = True) -> list[Example]:
    targets = {"apa": apa_target(utt), "mdd": mdd_target(utt)}
    return [
        Example(
            id=utt.id,
            task=task,
            audio_path=utt.audio_path,
            user_content=user_content(task, instructions, audio_token, control_token),
            answer=format_answer(targets[task]),
        )
        for task in TASKS
    ]


# ---------------------------------------------------------------------------------------------------------------
# Parsing generated answers
# ---------------------------------------------------------------------------------------------------------------

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)
_KEY_ALIASES = {"word transcript": "word_transcript", "phoneme transcript": "phoneme_transcript",
                "phone_transcript": "phoneme_transcript", "prosody": "prosodic"}


_DECODER = json.JSONDecoder()


def _balanced(text: str, start: int, quotes: bool) -> str | None:
    """The `{...}` opening at `start`, up to its matching brace; with `quotes`, braces inside '...' or "..." strings
    (a transcript may hold one) are not counted."""
    depth, quote, escaped = 0, "", False
    for end in range(start, len(text)):
        char = text[end]
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif quotes and char in "\"'":
            quote = char
        elif char in "{}":
            depth += 1 if char == "{" else -1
            if depth == 0:
                return text[start : end + 1]
    return None


def _object_at(text: str, start: int) -> dict | None:
    """The object opening at `start`: strict JSON (whatever follows it), else the balanced chunk read as JSON or as
    the single-quoted pseudo-JSON the paper's prompt shows."""
    try:
        return _DECODER.raw_decode(text, start)[0]  # text[start] is "{": a JSON value there is an object
    except (ValueError, RecursionError):
        pass
    for chunk in dict.fromkeys(_balanced(text, start, quotes) for quotes in (True, False)):
        if chunk is None:
            continue
        for loader in (json.loads, ast.literal_eval):
            try:
                obj = loader(chunk)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            if isinstance(obj, dict):
                return obj
    return None


def _first_object(raw: str) -> dict | None:
    """The first {...} in the text (inside a ``` fence if there is one, else anywhere), keys folded to the
    target's names."""
    fenced = _FENCE.search(raw)
    for text in ([fenced.group(1)] if fenced else []) + [raw]:  # a fence inside a transcript: the whole text
        start = text.find("{")
        while start != -1:
            obj = _object_at(text, start)
            if obj is not None:
                return {_KEY_ALIASES.get(str(k).strip().lower(), str(k).strip().lower()): v for k, v in obj.items()}
            start = text.find("{", start + 1)
    return None


def parse_apa(raw: str) -> dict[str, int] | None:
    """Scores as integers 0-10, or None if any aspect is missing, not a number or out of range."""
    obj = _first_object(raw)
    if obj is None:
        return None
    out = {}
    for aspect in APA_ASPECTS:
        value = obj.get(aspect)
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 10:
            return None
        out[aspect] = int(round(value))
    return out


def parse_mdd(raw: str) -> dict[str, str] | None:
    obj = _first_object(raw)
    if obj is None:
        return None
    words, phones = obj.get("word_transcript"), obj.get("phoneme_transcript")
    if not isinstance(words, str) or not isinstance(phones, str):
        return None
    return {"word_transcript": words.strip(), "phoneme_transcript": " ".join(phones.split())}


PARSERS = {"apa": parse_apa, "mdd": parse_mdd}
