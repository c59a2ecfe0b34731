"""Supervised fine-tuning examples: prompts and answers, collation, generation."""
