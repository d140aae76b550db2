"""The ``dtype`` argument (a torch dtype by name), checked where it is given rather than where it is used."""

from __future__ import annotations

from typing import Any

import torch

from lit_align.errors import ConfigError


def check_dtype(owner: Any, dtype: str | None) -> None:
    """ConfigError unless ``dtype`` names a torch floating-point dtype (``bfloat16``, ``float32``, ...) or is None."""
    value = getattr(torch, dtype, None) if isinstance(dtype, str) else None
    if dtype is not None and not (isinstance(value, torch.dtype) and value.is_floating_point):
        who = owner if isinstance(owner, str) else type(owner).__name__
        raise ConfigError(f"{who}: dtype must name a torch floating-point dtype such as bfloat16, float16 or float32 (or be null to keep the checkpoint's), got {dtype!r}")
