"""The training recipe: config in, run folder out (the trainer, its sampler)."""
