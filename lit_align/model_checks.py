"""Checks of a model folder and its tokenizer before anything trains on them (issue 24, item 3).

Each fault below used to pass silently or end in a library traceback:

* a folder without tokenizer files: transformers 5 returns an empty one-token tokenizer instead of
  raising, every prompt encodes to ``[]``, and the run "trains" at loss log 2 and exits 0;
* a tokenizer with more tokens than the model's embedding has rows: an ``IndexError`` inside torch
  at the first batch that holds such a token, after the data report said all was well;
* a corrupt or truncated ``*.safetensors`` file: a ``SafetensorError`` traceback;
* ``auto_map`` in ``config.json`` naming custom code that is not allowed to run, or not there.

``check_model_folder`` runs before loading (cheap: JSON and safetensors headers only);
``check_tokenizer`` after the tokenizer is loaded. Both raise ``ConfigError`` (one paragraph).
"""

from __future__ import annotations

import glob
import json
import os

from lit_align.errors import ConfigError

# Text any real tokenizer encodes to several tokens (byte-level BPE always does; word-level gives
# at least unknown-token ids).
PROBE_TEXT = "The food was great, and the service was friendly."


def _config(name: str) -> dict | None:
    path = os.path.join(os.path.expanduser(name), "config.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise ConfigError(f"model {name!r}: {path} is not valid JSON ({error}); restore it (save_pretrained writes it)") from error


def check_model_folder(name: str, trust_remote_code: bool = False) -> None:
    """ConfigError for a local model folder whose weights or custom code cannot load (see module docstring)."""
    folder = os.path.expanduser(name)
    if not os.path.isdir(folder):
        return  # a hub name: the loader reports its own problems
    from safetensors import SafetensorError, safe_open

    for path in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        try:
            with safe_open(path, framework="pt"):  # reads and checks the header against the file size
                pass
        except (SafetensorError, OSError) as error:
            raise ConfigError(
                f"model {name!r}: the weights file {path} is corrupt or incomplete ({error}), often an interrupted "
                "download or copy. Copy or download it again, or re-export the model with save_pretrained."
            ) from error
    _check_auto_map(name, folder, _config(name) or {}, trust_remote_code)


def _check_auto_map(name: str, folder: str, config: dict, trust_remote_code: bool) -> None:
    auto_map = config.get("auto_map")
    if not isinstance(auto_map, dict) or not auto_map:
        return
    from transformers import CONFIG_MAPPING

    targets = sorted({v for value in auto_map.values() for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)})
    model_type = config.get("model_type")
    if not trust_remote_code:
        if model_type in CONFIG_MAPPING:
            return  # transformers has its own class for this type and loads it without the custom code
        raise ConfigError(
            f"model {name!r}: config.json's auto_map points at custom code ({', '.join(targets)}) for model_type "
            f"{model_type!r}, which transformers does not know, and custom code runs only when allowed. If you trust "
            "the code in that folder, set model.init_args.trust_remote_code: true; otherwise give a model of a "
            "type transformers supports."
        )
    # Targets are "module.Class", or "repo--module.Class" for code in another repository.
    missing = sorted({f"{t.split('.')[0]}.py" for t in targets if "--" not in t and not os.path.isfile(os.path.join(folder, f"{t.split('.')[0]}.py"))})
    if missing:
        raise ConfigError(
            f"model {name!r}: config.json's auto_map names custom code ({', '.join(targets)}), but the folder has no "
            f"{', '.join(missing)}. Copy the model's code files into {folder}, or remove auto_map from config.json "
            f"when model_type {model_type!r} is one transformers knows."
        )


def embedding_rows(name: str, trust_remote_code: bool = False) -> int | None:
    """Rows of ``name``'s input embedding (``vocab_size`` of its config), or None when unknown."""
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    rows = getattr(text, "vocab_size", None)
    return rows if isinstance(rows, int) else None


def check_tokenizer(name: str, tokenizer, trust_remote_code: bool = False) -> None:
    """ConfigError when ``tokenizer`` encodes text to nothing, or has more tokens than the model's embedding."""
    probe = tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
    rows = embedding_rows(name, trust_remote_code)
    if not probe:
        raise ConfigError(
            f"the tokenizer loaded for {name!r} encodes text to no tokens at all (vocabulary of {len(tokenizer)} token(s)"
            f"{f' for a model with {rows} embedding rows' if rows else ''}): the folder most likely lacks the tokenizer's "
            "files (tokenizer.json or vocab/merges, tokenizer_config.json, special_tokens_map.json), and transformers "
            "then builds an empty tokenizer instead of failing. Save the tokenizer into the folder with "
            "tokenizer.save_pretrained(folder), or copy its files there from the model you started from."
        )
    if rows is not None and len(tokenizer) > rows:
        raise ConfigError(
            f"the tokenizer of {name!r} has {len(tokenizer)} tokens but the model's embedding has only {rows} rows "
            f"(config vocab_size), so token ids {rows}..{len(tokenizer) - 1} would index past it. The tokenizer does not "
            "belong to these weights (or tokens were added without resizing): resize the model with "
            "model.resize_token_embeddings(len(tokenizer)) and save both with save_pretrained, or use the tokenizer "
            "the model was trained with."
        )
