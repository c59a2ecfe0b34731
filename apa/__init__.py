"""LoRA fine-tuning of Phi-4-multimodal for English pronunciation assessment (APA) and
mispronunciation detection and diagnosis (MDD), reproducing arXiv 2509.02915 on SpeechOcean762."""

import warnings

__version__ = "0.1.0"

# Third-party noise that says nothing about this project's runs (transformers 5.24 calls its own deprecated name)
warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
