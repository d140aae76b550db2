"""Where generated artefacts are cached, and the model fingerprint that keys them.

Used by the embedded datasets (``lit_align.data.embedded``) and the reference cache
(``lit_align.reference_cache``); a module of its own so that neither imports the other.
"""

from __future__ import annotations

import os

from lit_align.modeling import is_embedded


def cache_root() -> str:
    """Where generated artefacts live (sampled pairs, precomputed reference log-probs).

    ``$LIT_ALIGN_CACHE`` if set (tests point it at a temp dir), else ``$XDG_CACHE_HOME/lit_align``
    (``~/.cache/lit_align``), like Hugging Face's cache: independent of the current directory, so a
    run from another folder reuses what was generated instead of silently sampling it again. Entries
    are keyed by what made them (model fingerprint, sizes, seed); deleting the folder is always safe.
    """
    if os.environ.get("LIT_ALIGN_CACHE"):
        return os.path.expanduser(os.environ["LIT_ALIGN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "lit_align")


def model_fingerprint(name: str) -> str:
    """Identifies a model's weights cheaply, so a retrained SFT model invalidates sampled pairs."""
    if is_embedded(name) or not os.path.isdir(name):
        return name
    parts = []
    for file in sorted(os.listdir(name)):
        if file.endswith((".safetensors", ".bin", ".json")):
            stat = os.stat(os.path.join(name, file))
            parts.append(f"{file}:{stat.st_size}:{stat.st_mtime_ns}")
    # Absolute: the same relative name (data/embedded/sft) in two folders is two different models.
    return os.path.abspath(name) + "|" + ",".join(parts)
