"""The checkpoint's tokenizer, exactly as its `tokenizer.json` says.

The released Phi-4-multimodal tokenizer is gpt-4o style: `tokenizer.json` splits text with a `Split` regex (the
o200k pattern below) before its byte-level BPE, and a conversion written by transformers 4.5x names
`GPT2Tokenizer` in `tokenizer_config.json`. Under transformers 5, `AutoTokenizer` rebuilds such a tokenizer as
GPT-2's own class, with GPT-2's `ByteLevel` pre-tokenizer in place of the file's regex (only model types on
transformers' list of hub tokenizer classes known to be wrong are spared; `phi3` is on it, `phi4_multimodal` is
not). Digits, ranges such as "0 - 10" and whole prompts then tokenize unlike the model's training data, without a
warning. `TokenizersBackend` takes `tokenizer.json` as written, special tokens (`audio_token`) included;
`tokenizer_file_problems` proves it did.
"""

from __future__ import annotations

import json
from pathlib import Path

# gpt-4o's (o200k_base) pre-tokenizer pattern, from OpenAI's tiktoken (tiktoken_ext/openai_public.py, MIT licence):
# letter runs split by case class, with an optional leading non-letter and English contractions; digits in groups
# of at most 3; punctuation runs; newlines; other whitespace.
O200K_PATTERN = "|".join([
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"\p{N}{1,3}",
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
    r"\s*[\r\n]+",
    r"\s+(?!\S)",
    r"\s+",
])

# The parts of tokenizer.json that decide how text becomes tokens (beside the vocabulary and merges themselves).
TOKENIZING_PARTS = ("normalizer", "pre_tokenizer")


def load_tokenizer(path: str, revision: str | None = None):
    """The tokenizer of a checkpoint (folder or hub id at `revision`) or of a trained adapter folder, built from its
    `tokenizer.json` as written (transformers' `TokenizersBackend`), with its special tokens."""
    from transformers import TokenizersBackend

    return TokenizersBackend.from_pretrained(path, revision=revision)


def tokenizer_file(path: str, revision: str | None = None) -> Path | None:
    from transformers.utils import cached_file

    found = cached_file(path, "tokenizer.json", revision=revision, _raise_exceptions_for_missing_entries=False,
                        _raise_exceptions_for_connection_errors=False)
    return Path(found) if found else None


def tokenizer_file_problems(tokenizer, path: str, revision: str | None = None) -> list[str]:
    """The loaded tokenizer must normalize and pre-tokenize as the checkpoint's tokenizer.json says, and use its
    BPE settings (everything of its model but the vocabulary and merges)."""
    found = tokenizer_file(path, revision)
    if found is None:
        return ["no tokenizer.json: the checkpoint's tokenizer cannot be checked against its file"]
    on_disk = json.loads(found.read_text(encoding="utf-8"))
    live = json.loads(tokenizer.backend_tokenizer.to_str())
    problems = []
    for part in TOKENIZING_PARTS:
        if live.get(part) != on_disk.get(part):
            problems.append(f"the loaded tokenizer's {part} differs from tokenizer.json's ({_kind(live.get(part))} "
                            f"instead of {_kind(on_disk.get(part))})")
    settings, live_settings = _model_settings(on_disk), _model_settings(live)
    if settings != live_settings:
        differing = sorted(k for k in settings.keys() | live_settings.keys() if settings.get(k) != live_settings.get(k))
        problems.append(f"the loaded tokenizer's model settings differ from tokenizer.json's ({', '.join(differing)})")
    return problems


def _model_settings(layout: dict) -> dict:
    """The tokenizer model's options, without vocabulary and merges; an empty string read as unset (None)."""
    return {k: (v if v != "" else None) for k, v in (layout.get("model") or {}).items() if k not in ("vocab", "merges")}


def _kind(part: dict | None) -> str:
    """A short description of a normalizer or pre-tokenizer: its type and, for a sequence, its members' types."""
    if not part:
        return "none"
    members = part.get("pretokenizers") or part.get("normalizers")
    return part["type"] + (f"[{', '.join(_kind(m) for m in members)}]" if members else "")
