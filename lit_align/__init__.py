"""lit_align: preference alignment of language models on PyTorch Lightning."""

from lit_align import quiet as _quiet

_quiet.install()

__version__ = "0.1.0"
