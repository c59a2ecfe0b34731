"""A run folder's checkpoints on a test split: predictions.jsonl, metrics.json."""
