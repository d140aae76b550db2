"""What the DataModule needs to know about its model, read from the model's own config.

The DataModule knows its ``model`` name (linked from the algorithm's by the CLI), so it checks its
``max_length`` against that model's position table itself instead of reaching through the trainer
into the LightningModule.
"""

from __future__ import annotations

from functools import lru_cache

from lit_align.modeling import EMBEDDED_PREFIX, is_embedded, load_tokenizer


@lru_cache(maxsize=8)
def max_positions(model: str) -> int | None:
    """``max_position_embeddings`` of ``model``'s config, or None when the config has none or cannot be read
    (the model loader reports an unreadable model with its own message)."""
    try:
        if is_embedded(model):
            from lit_align.embedded.model import model_config

            config = model_config(load_tokenizer(model), size=model[len(EMBEDDED_PREFIX) :])  # no weights built
        else:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(model)
    except (OSError, ValueError):
        return None
    limit = getattr(config, "max_position_embeddings", None)
    return limit if isinstance(limit, int) else None
