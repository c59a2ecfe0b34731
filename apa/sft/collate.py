"""Batch examples into Phi-4-multimodal inputs with labels that teach only the answer.

The collator produces exactly what `processor(text=..., audio=..., padding=True)` produces (tested tensor by tensor),
but does the expensive parts once instead of once per batch:

- **Prompt tokens.** Every example of a task has the same prompt (chat template, control token, instruction, one
  audio placeholder); only the number of audio tokens differs. The prompt is tokenized once per distinct prompt and
  the placeholder expanded by list arithmetic; each answer is tokenized once and kept.
- **Log-mel features.** The checkpoint's own feature extractor runs one clip at a time and the result is kept in a
  bounded per-process cache: a clip serves two examples (APA and MDD) and comes back every epoch. With persistent
  dataloader workers the cache lives across epochs.

One deliberate difference: padded feature frames are zeros. transformers' batched extractor means to zero the frames
past a clip's end (its comment: to match the unbatched implementation) but leaves the one or two frames that overlap
the clip's tail non-zero. Those frames lie outside `audio_attention_mask`; zeros are what a clip extracted alone and
every fully padded frame give. Generation inputs come from here too, so evaluation sees what training saw.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from apa.constants import ASSISTANT_TOKEN, SAMPLING_RATE
from apa.data.audio import decode_audio

log = logging.getLogger(__name__)
IGNORE_INDEX = -100


def chat_text(processor, user_content: str, answer: str | None) -> str:
    """The conversation through the checkpoint's chat template: with an answer for training, open for generation."""
    messages = [{"role": "user", "content": user_content}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return processor.tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=answer is None
    )


class ChatTokens:
    """Token ids of a conversation in three parts: prompt before the audio placeholder, prompt after it (ending in
    `<|assistant|>`), answer (with its end tokens). Prompts are tokenized once per distinct prompt, answers once.

    Splitting is exact because the placeholder and `<|assistant|>` are special tokens: the tokenizer never merges
    text across them, so the pieces concatenate to the tokens of the whole conversation (tested against the
    processor)."""

    def __init__(self, processor):
        self.processor = processor
        self.audio_id = processor.audio_token_id
        self.assistant_id = processor.tokenizer.convert_tokens_to_ids(ASSISTANT_TOKEN)
        self._prompt_texts: dict[str, str] = {}
        self._prompts: dict[str, tuple[list[int], list[int]]] = {}
        self._answers: dict[tuple[str, str], list[int]] = {}

    def _ids(self, text: str) -> list[int]:
        return self.processor.tokenizer(text, add_special_tokens=False).input_ids

    def _prompt_text(self, user_content: str) -> str:
        if user_content not in self._prompt_texts:
            self._prompt_texts[user_content] = chat_text(self.processor, user_content, None)
        return self._prompt_texts[user_content]

    def prompt(self, user_content: str) -> tuple[list[int], list[int]]:
        if user_content not in self._prompts:
            ids = self._ids(self._prompt_text(user_content))
            if ids.count(self.audio_id) != 1:
                found = ids.count(self.audio_id)
                raise ValueError(f"a prompt must hold exactly one audio placeholder ({self.processor.audio_token}); "
                                 f"found {found} in {user_content!r}")
            if ids[-1] != self.assistant_id:
                raise ValueError(f"the prompt does not end in {ASSISTANT_TOKEN}; the chat template would let the "
                                 f"model learn the prompt: {user_content!r}")
            cut = ids.index(self.audio_id)
            self._prompts[user_content] = (ids[:cut], ids[cut + 1:])
        return self._prompts[user_content]

    def answer(self, user_content: str, answer: str) -> list[int]:
        key = (user_content, answer)
        if key not in self._answers:
            prompt = self._prompt_text(user_content)
            full = chat_text(self.processor, user_content, answer)
            if not full.startswith(prompt):
                raise ValueError("the chat template does not extend the generation prompt with the answer; "
                                 "prompt tokens cannot be shared")
            self._answers[key] = self._ids(full[len(prompt):])
        return self._answers[key]


class ClipFeatures:
    """Log-mel features of one clip by the checkpoint's feature extractor, with a bounded LRU cache (in MB).

    Per clip, the extractor gives frames bit-identical to the valid frames of its batched output (tested)."""

    def __init__(self, feature_extractor, cache_mb: float = 1024):
        self.extractor = feature_extractor
        self.budget = int(cache_mb * 2**20)
        self.used = 0
        self._cache: OrderedDict[str, tuple[torch.Tensor, int]] = OrderedDict()

    def extract(self, audio) -> tuple[torch.Tensor, int]:
        """(frames x mel bins float32 features, number of audio tokens) of a decoded 16 kHz clip."""
        out = self.extractor(audio, sampling_rate=SAMPLING_RATE, return_tensors="pt")
        return out["audio_input_features"][0], int(out["audio_embed_sizes"][0])

    def __call__(self, path: str) -> tuple[torch.Tensor, int]:
        hit = self._cache.get(path)
        if hit is not None:
            self._cache.move_to_end(path)
            return hit
        item = self.extract(decode_audio(path))
        size = item[0].numel() * item[0].element_size()
        if size <= self.budget:
            self._cache[path] = item
            self.used += size
            while self.used > self.budget:
                _, (old, _) = self._cache.popitem(last=False)
                self.used -= old.numel() * old.element_size()
        return item


class SpeechSFTCollator:
    """Rows {id, task, audio_path, user_content, answer} -> processor features + labels, for training; and the same
    prompts open for the answer, for generation (`generation_inputs`), so that both see identical features.

    Labels are -100 on the prompt (up to and including `<|assistant|>`), its audio placeholders and padding; the
    answer, its `<|end|>` and the final end-of-text are learned. Right padding, as the processor pads for training.
    """

    def __init__(self, processor, max_length: int | None = None, feature_cache_mb: float = 1024):
        self.max_length = max_length
        self.pad_id = processor.tokenizer.pad_token_id
        self.audio_id = processor.audio_token_id
        self.tokens = ChatTokens(processor)
        self.features = ClipFeatures(processor.audio_processor, feature_cache_mb)

    def _prompt(self, row: dict[str, Any], n_audio: int) -> list[int]:
        before, after = self.tokens.prompt(row["user_content"])
        return before + [self.audio_id] * n_audio + after

    @staticmethod
    def _audio(clips: list[tuple[torch.Tensor, int]]) -> dict[str, torch.Tensor]:
        frames = [features for features, _ in clips]
        out = {"audio_input_features": pad_sequence(frames, batch_first=True, padding_value=0.0),
               "audio_embed_sizes": torch.tensor([n_audio for _, n_audio in clips])}
        if len(clips) > 1:  # as the feature extractor: a single clip has no padding, hence no mask
            n_frames = torch.tensor([len(f) for f in frames])
            out["audio_attention_mask"] = torch.arange(int(n_frames.max()))[None, :] < n_frames[:, None]
        return out

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        clips = [self.features(r["audio_path"]) for r in rows]
        prompts = [self._prompt(r, n_audio) for r, (_, n_audio) in zip(rows, clips, strict=True)]
        ids = [torch.tensor(p + self.tokens.answer(r["user_content"], r["answer"]))
               for r, p in zip(rows, prompts, strict=True)]
        input_ids = pad_sequence(ids, batch_first=True, padding_value=self.pad_id)
        lengths = torch.tensor([len(x) for x in ids])
        attention_mask = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()
        labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        for i, prompt in enumerate(prompts):
            labels[i, : len(prompt)] = IGNORE_INDEX
        if self.max_length and input_ids.shape[1] > self.max_length:
            long = [r["id"] for r, n in zip(rows, lengths.tolist(), strict=True) if n > self.max_length]
            log.warning("examples %s are longer than max_length=%d; kept whole (no answer is truncated)",
                        long, self.max_length)
        return {"input_ids": input_ids, "attention_mask": attention_mask, **self._audio(clips), "labels": labels}

    def generation_inputs(self, rows: list[dict[str, Any]], audio: list | None = None) -> dict[str, torch.Tensor]:
        """Prompts open for the answer, left-padded: generation continues from every row's last position.
        `audio`: decoded clips to use instead of the rows' `audio_path`."""
        clips = ([self.features(r["audio_path"]) for r in rows] if audio is None
                 else [self.features.extract(a) for a in audio])
        prompts = [self._prompt(r, n_audio) for r, (_, n_audio) in zip(rows, clips, strict=True)]
        width = max(map(len, prompts))
        input_ids = torch.full((len(prompts), width), self.pad_id)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, prompt in enumerate(prompts):
            input_ids[i, width - len(prompt):] = torch.tensor(prompt)
            attention_mask[i, width - len(prompt):] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, **self._audio(clips)}
