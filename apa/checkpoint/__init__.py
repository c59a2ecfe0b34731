"""The Phi-4-multimodal checkpoint: its released layout, loading (LoRA, control tokens), the
miniatures, hub access and the load-time checks."""

from apa.checkpoint.layout import silence_known_warnings

silence_known_warnings()  # before any config is loaded: transformers' known longrope advice (apa.checkpoint.layout)
