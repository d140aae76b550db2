"""The scalar reward head of a reward model: last-token pooling, building the Hugging Face
sequence classifier from a causal-LM checkpoint, and exporting it so any HF tool scores alike.

r(x, y) = w^T h_T, with h_T the final hidden state of the last real (attended) token of
prompt + completion: a causal model has read the whole sequence only there (InstructGPT,
arXiv 2203.02155, Sec. 3.5: "a projection layer that outputs a scalar value" on the final token).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase

from lit_align.errors import ConfigError
from lit_align.modeling import _check_local, is_embedded, load_causal_lm

# Added to tokenizers whose pad token is EOS before export (see ``export_reward_model``).
EXPORT_PAD_TOKEN = "<|reward_pad|>"


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of the last attended token of each row, from the attention mask alone.

    Right padding, left padding and any pad id work alike. Reading pad ids instead (e.g. "first pad
    minus one") breaks when pad == EOS: a completion ending in its real EOS would be pooled one
    token early, or on the pad itself.
    """
    mask = attention_mask.bool()
    if mask.ndim != 2 or not bool(mask.any(-1).all()):
        raise ValueError("attention_mask must be [batch, length] with at least one attended token per row")
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask, positions, -1).amax(dim=-1)


def pool_last_token(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[batch, hidden] states at ``last_token_index``."""
    index = last_token_index(attention_mask)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]


def score_layer(model: PreTrainedModel) -> nn.Linear:
    """The linear head of a one-output sequence classifier (``score`` in Llama, Mistral, GPT-2, ...)."""
    heads = [m for name, m in model.named_children() if name != model.base_model_prefix and isinstance(m, nn.Linear) and m.out_features == 1]
    if len(heads) != 1:
        raise ConfigError(f"{type(model).__name__} has no single one-output linear head next to its backbone; reward models need a family with a plain `score` layer (Llama, Mistral, Qwen, GPT-2, ...)")
    return heads[0]


def sequence_rewards(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """r(x, y) per row, float32: the backbone once, the head only on the pooled states (same numbers as
    HF's own forward, which projects every position and then picks the last non-pad one)."""
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    return score_layer(model)(pool_last_token(hidden, attention_mask)).squeeze(-1).float()


def build_sequence_classifier(name: str, tokenizer: PreTrainedTokenizerBase, dtype: str | None = None, trust_remote_code: bool = False) -> PreTrainedModel:
    """``AutoModelForSequenceClassification`` (num_labels = 1) on the backbone of the causal LM ``name``.

    A new head starts at zero, so every reward is 0 at init and the Bradley–Terry loss is exactly
    log 2; a checkpoint that already is a one-output classifier (an exported reward model) keeps its head.
    """
    if is_embedded(name):
        causal = load_causal_lm(name, tokenizer, dtype=dtype)
        config = copy.deepcopy(causal.config)
        config.num_labels, config.pad_token_id = 1, tokenizer.pad_token_id
        with torch.random.fork_rng(devices=[]):  # keep building from disturbing a run's RNG stream
            model = AutoModelForSequenceClassification.from_config(config).to(causal.dtype)
        model.base_model.load_state_dict(causal.base_model.state_dict())
        new_head = True
    else:
        _check_local(name)
        kwargs = {"dtype": getattr(torch, dtype)} if dtype else {}
        try:
            model, info = AutoModelForSequenceClassification.from_pretrained(
                name, num_labels=1, pad_token_id=tokenizer.pad_token_id, trust_remote_code=trust_remote_code, output_loading_info=True, **kwargs
            )
        except ValueError as error:
            raise ConfigError(f"model {name!r}: transformers has no sequence-classification class for this family ({error}); pick a Llama/Mistral/Qwen/GPT-2-style checkpoint") from error
        except OSError as error:
            raise OSError(f"could not load model {name!r}: not a local save_pretrained folder and not in the hub cache") from error
        new_head = any(k.split(".")[0] != model.base_model_prefix for k in info["missing_keys"])
    if new_head:
        nn.init.zeros_(score_layer(model).weight)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def export_reward_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, directory: str) -> None:
    """``save_pretrained`` model and tokenizer so ``AutoModelForSequenceClassification`` (and
    ``lit_align.rewards.HFClassifierReward``) score exactly as training did.

    HF pools on the rightmost token that is not ``config.pad_token_id``. With pad == EOS that skips
    the completion's real EOS, where the reward was trained; so such a tokenizer gets a pad token of
    its own (``EXPORT_PAD_TOKEN``; the embedding grows only if the id is new). Pad embeddings never
    reach the pooled state: right padding comes after it, left padding is masked.
    """
    if tokenizer is not None and (tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id):
        tokenizer, model = copy.deepcopy(tokenizer), copy.deepcopy(model)
        tokenizer.add_special_tokens({"pad_token": EXPORT_PAD_TOKEN})
        size = model.get_input_embeddings().weight.shape[0]
        if tokenizer.pad_token_id >= size:
            model.resize_token_embeddings(tokenizer.pad_token_id + 1, mean_resizing=False)
    if tokenizer is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
