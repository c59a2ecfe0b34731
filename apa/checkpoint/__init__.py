"""The Phi-4-multimodal checkpoint: its released layout, loading (LoRA, control tokens), the
miniatures, hub access and the load-time checks."""
