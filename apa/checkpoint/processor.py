"""The audio-only processor: the checkpoint's Phi4MultimodalProcessor without its image processor, saved with the
checkpoint's own processor files.

`AutoProcessor` builds the image processor the files name (`Phi4MultimodalImageProcessorFast`), and transformers'
only implementation of it imports torchvision. This project is audio-only: it builds the processor from the tokenizer
and the audio feature extractor, with a bare image-processor placeholder in memory. The placeholder is never saved:
`save_pretrained` writes the tokenizer (with the control tokens) and copies the base checkpoint's own processor files
verbatim, so `AutoProcessor.from_pretrained(<final_model>)` does exactly what it does on the base checkpoint (loads
where torchvision is installed, raises the same ImportError where it is not), under any transformers version.
"""

from __future__ import annotations

from pathlib import Path

from transformers import Phi4MultimodalProcessor

# The files of a checkpoint that describe its processor (beside the tokenizer's own files). The native conversion
# writes processor_config.json; older layouts kept the image/audio settings in preprocessor_config.json.
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


def checkpoint_processor_files(path: str, revision: str | None = None) -> dict[str, str]:
    """{file name: text} of the processor files a checkpoint (folder or hub id at `revision`) holds."""
    from transformers.utils import cached_file

    out = {}
    for name in PROCESSOR_FILES:
        found = cached_file(path, name, revision=revision, _raise_exceptions_for_missing_entries=False,
                            _raise_exceptions_for_connection_errors=False)
        if found is not None:
            out[name] = Path(found).read_text(encoding="utf-8")
    return out


class AudioOnlyProcessor(Phi4MultimodalProcessor):
    """Phi4MultimodalProcessor whose image processor is a placeholder that is never written to disk.

    `checkpoint_files`: the base checkpoint's processor files ({name: text}), written back verbatim on save."""

    # the parent's signature, spelled out: transformers finds a processor's parts by the names of __init__'s arguments
    def __init__(self, image_processor, audio_processor, tokenizer, checkpoint_files: dict[str, str] | None = None,
                 **kwargs):
        super().__init__(image_processor, audio_processor, tokenizer, **kwargs)
        self.checkpoint_files = dict(checkpoint_files or {})

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        if push_to_hub:
            raise NotImplementedError("AudioOnlyProcessor saves to a folder; push the folder with huggingface_hub")
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        written = list(self.tokenizer.save_pretrained(str(out)))
        for name, text in self.checkpoint_files.items():
            (out / name).write_text(text, encoding="utf-8")
            written.append(str(out / name))
        return written


def load_processor(path: str, revision: str | None = None) -> AudioOnlyProcessor:
    """The processor of a checkpoint (or of a trained adapter folder, which carries its base's processor files) from
    its tokenizer (exactly as its tokenizer.json says: apa.checkpoint.tokenizer) and audio feature extractor;
    torchvision is not needed."""
    from transformers import Phi4MultimodalFeatureExtractor
    from transformers.image_processing_utils import ImageProcessingMixin

    from apa.checkpoint.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(path, revision)
    if getattr(tokenizer, "audio_token", None) is None:  # the processor cannot be built without it
        from apa.errors import UserError

        raise UserError(f"{path}: the tokenizer names no audio token (audio_token in tokenizer_config.json, as the "
                        "native checkpoint's converter writes it: <|endoftext11|>); tokenizer and config must come "
                        "from the same native checkpoint and revision")
    audio = Phi4MultimodalFeatureExtractor.from_pretrained(path, revision=revision)
    return AudioOnlyProcessor(image_processor=ImageProcessingMixin(), audio_processor=audio, tokenizer=tokenizer,
                              chat_template=tokenizer.chat_template,
                              checkpoint_files=checkpoint_processor_files(path, revision))
