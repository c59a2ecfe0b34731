"""LoRA fine-tuning of Phi-4-multimodal for English pronunciation assessment (APA) and
mispronunciation detection and diagnosis (MDD), reproducing arXiv 2509.02915 on SpeechOcean762."""

__version__ = "0.1.0"
