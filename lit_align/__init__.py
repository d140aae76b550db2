"""lit_align: preference alignment of language models on PyTorch Lightning."""

__version__ = "0.1.0"
