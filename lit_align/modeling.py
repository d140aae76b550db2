"""Loading policies and tokenizers: hub name, local path, or the embedded default.

Model names understood everywhere a ``model`` argument appears:

* ``embedded:tiny`` / ``embedded:micro`` — a randomly initialised Llama-family model with the
  embedded word-level tokenizer (built locally, no download);
* a local directory written by ``save_pretrained`` (our exported policies included);
* a Hugging Face hub name such as ``HuggingFaceH4/mistral-7b-sft-beta`` (needs network or cache).
"""

from __future__ import annotations

import os

import torch
from lightning.pytorch.utilities import rank_zero_info
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from lit_align.errors import ConfigError
from lit_align.model_checks import check_model_folder, check_tokenizer

EMBEDDED_PREFIX = "embedded:"
# The embedded SFT recipe's export (configs/sft.yaml, ExportPretrained also_to), relative to the
# current directory like runs/: the start model of every other embedded recipe.
EMBEDDED_SFT_EXPORT = "data/embedded/sft"


def is_embedded(name: str) -> bool:
    return name.startswith(EMBEDDED_PREFIX)


def _check_local(name: str) -> None:
    # A relative path that does not exist is most often a stage that has not been run yet
    # (e.g. the DPO config points at the SFT export); say so instead of a hub 404 or a
    # repo-id validation error from deep inside huggingface_hub.
    looks_local = name.startswith((".", "/", "~")) or (os.sep in name and name.count("/") != 1) or name.startswith("data/")
    if looks_local and not os.path.isdir(os.path.expanduser(name)):
        where = f" (looked in {os.path.abspath(os.path.expanduser(name))})"
        if os.path.normpath(name) == os.path.normpath(EMBEDDED_SFT_EXPORT):
            raise ConfigError(
                f"model directory {name!r} does not exist{where}. It is the export of the embedded SFT recipe, "
                "relative to the current directory: run `python -m lit_align fit --config configs/sft.yaml` "
                "(or `make sft`) in this directory first, or point --model.init_args.model at another model."
            )
        raise ConfigError(
            f"model directory {name!r} does not exist{where}. Give a folder written by save_pretrained "
            "(e.g. <run>/hf_model of an earlier stage: run that stage first), a hub name, or embedded:tiny."
        )


def _not_loadable(name: str) -> str:
    if os.path.isdir(os.path.expanduser(name)):
        return "the folder exists but holds no loadable model/tokenizer files (config.json, *.safetensors, tokenizer files). Save both with save_pretrained into it."
    return (
        "it is not a local directory, and the hub copy is not cached (this machine may have no hub access). "
        "Pass a local folder written by save_pretrained, or embedded:tiny."
    )


def load_tokenizer(name: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Tokenizer for ``name``; gives it a pad token (= EOS) when it has none, as Llama/Mistral lack one."""
    if is_embedded(name):
        from lit_align.embedded.tokenizer import build_tokenizer

        tokenizer = build_tokenizer()
    else:
        _check_local(name)
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
        except OSError as error:
            raise ConfigError(f"could not load a tokenizer for {name!r}: {_not_loadable(name)}") from error
        check_tokenizer(name, tokenizer, trust_remote_code)  # an empty one, or one larger than the embedding
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ConfigError(f"tokenizer {name!r} has neither a pad nor an EOS token; set tokenizer.pad_token before training")
        # Padding is masked out of both attention and loss, so reusing EOS as pad is safe; the real
        # EOS that ends each completion stays in the loss mask.
        tokenizer.pad_token = tokenizer.eos_token
        rank_zero_info(f"lit_align: tokenizer {name!r} has no pad token; using EOS ({tokenizer.eos_token!r}) for padding")
    return tokenizer


def load_causal_lm(
    name: str,
    tokenizer: PreTrainedTokenizerBase | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    seed: int = 0,
) -> PreTrainedModel:
    """Causal LM by name (see module docstring). ``dtype`` e.g. "bfloat16"; None keeps the checkpoint's."""
    if is_embedded(name):
        from lit_align.embedded.model import build_model

        model = build_model(tokenizer or load_tokenizer(name), size=name[len(EMBEDDED_PREFIX) :], seed=seed)
        return model.to(getattr(torch, dtype)) if dtype else model
    _check_local(name)
    check_model_folder(name, trust_remote_code)  # corrupt weights, custom code that cannot run
    kwargs = {"dtype": getattr(torch, dtype)} if dtype else {}
    # trust_remote_code stays off unless asked: it runs Python shipped with the checkpoint.
    try:
        return AutoModelForCausalLM.from_pretrained(name, trust_remote_code=trust_remote_code, **kwargs)
    except OSError as error:
        raise ConfigError(f"could not load model {name!r}: {_not_loadable(name)}") from error
    except ValueError as error:
        # transformers' answer for a config with no causal-LM class: a list of ~250 config names.
        if "Unrecognized configuration class" not in str(error):
            raise
        raise ConfigError(_not_causal(name, trust_remote_code)) from error


def _not_causal(name: str, trust_remote_code: bool) -> str:
    """What ``name`` is instead of a causal LM, and what to give."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    kind = "an encoder-decoder (sequence-to-sequence) model" if getattr(config, "is_encoder_decoder", False) else "not a causal language model"
    architectures = ", ".join(config.architectures or []) or "none named"
    return (
        f"model {name!r} is a {config.model_type!r} model (architectures: {architectures}), {kind}. "
        "lit_align trains causal (decoder-only) language models, the ones AutoModelForCausalLM loads "
        "(e.g. Llama, Mistral, Qwen, GPT-2, OPT, Pythia): give such a model's folder or hub name in "
        "model.init_args.model, or embedded:tiny."
    )
