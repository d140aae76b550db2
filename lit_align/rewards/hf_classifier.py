"""A Hugging Face sequence-classification model as the reward: r(x, y) = its score of "prompt completion"."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from lit_align.errors import ConfigError, check_range
from lit_align.ops import pad_right
from lit_align.reward_head import pool_last_token
from lit_align.rewards.base import RewardFunction
from lit_align.rewards.layout import adds_bos, reward_input_ids
from lit_align.utils.dtypes import check_dtype

ScoreKind = Literal["logit", "probability", "log_odds"]


def check_template(template: str) -> None:
    """ConfigError unless ``template`` is ``chat`` or a format string using {prompt} and/or {completion} only."""
    if template == "chat":
        return
    try:
        filled = template.format(prompt="\0p", completion="\0c")
    except (KeyError, IndexError, ValueError, AttributeError) as error:
        raise ConfigError(f"HFClassifierReward: template must be 'chat' or a format string with the fields {{prompt}} and {{completion}} only, got {template!r} ({type(error).__name__}: {error})") from None
    if "\0c" not in filled:
        raise ConfigError(f"HFClassifierReward: template {template!r} has no {{completion}} field, so every completion would get the same score; use e.g. '{{prompt}} {{completion}}'")


class HFClassifierReward(RewardFunction):
    """Reward from ``AutoModelForSequenceClassification`` loaded by hub name or local path.

    A reward model with one output (``num_labels = 1``, the usual RLHF head) scores with its
    logit. For a classifier with several labels (e.g. a sentiment model, as in the DPO paper's
    IMDb task) name the ``label`` (index or name such as ``POSITIVE``) and how to read it.

    Args:
        model: Hub name or local ``save_pretrained`` directory (with its tokenizer).
        label: Output index or label name to read; default 0 (the only output of a reward model).
        score: ``logit`` of the label; its softmax ``probability``; or ``log_odds``
            log p/(1 - p), which for two classes is the logit difference.
        template: How prompt and completion are joined into the classified text; ``chat`` renders
            them as a user and an assistant turn with the reward model's own chat template (the
            usual form for chat reward models), without adding special tokens a second time.
        append_eos: Score exactly [BOS] + text + one EOS (``lit_align.rewards.layout``), as
            lit_align's ``RewardModel`` saw its training pairs (the encoder ends every completion
            with EOS and the head reads the last token, so the score lives on that EOS), whatever
            the tokenizer's conventions: GPT-2 (no BOS added, BOS = EOS), OPT (BOS = EOS prepended),
            Llama-style (adds BOS and maybe EOS itself). Without it a lit_align reward model is read
            one token early, on a position it was never trained on (measured on the embedded task:
            Spearman with the gold reward 0.78 with EOS, 0.30 without). A text that already ends in
            EOS (e.g. a chat template's end of turn, whose trailing newline is dropped, as the
            training encoder does) gets no second one. None (default): on for a one-output reward
            model whose tokenizer has an EOS token, off for multi-label classifiers (sentiment
            models are trained on plain text; BERT-style tokenizers add their own [SEP] anyway).
        batch_size: Texts per forward pass.
        max_length: Longest text in tokens (cut from the left: the completion is at the end).
        device: ``cuda``/``cpu``; default CUDA when available.
        dtype: Load the weights in this dtype (e.g. ``bfloat16``); None keeps the checkpoint's.
        trust_remote_code: Allow model code shipped with a hub checkpoint to run (off by default).
    """

    def __init__(
        self,
        model: str,
        label: int | str = 0,
        score: ScoreKind = "logit",
        template: str = "{prompt} {completion}",
        append_eos: bool | None = None,
        batch_size: int = 32,
        max_length: int = 512,
        device: str | None = None,
        dtype: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        check_range(self, "batch_size", batch_size, 1, integer=True)
        check_range(self, "max_length", max_length, 2, integer=True)
        check_template(template)
        check_dtype(self, dtype)
        if os.path.isdir(os.path.expanduser(model)) and not os.path.exists(os.path.join(os.path.expanduser(model), "config.json")):
            raise ConfigError(f"HFClassifierReward: could not load a sequence-classification reward model from model={model!r}: {_why_not_loadable(model)}")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
            kwargs = {"dtype": getattr(torch, dtype)} if dtype else {}
            self.model = AutoModelForSequenceClassification.from_pretrained(model, trust_remote_code=trust_remote_code, **kwargs)
        except OSError as error:
            raise ConfigError(f"HFClassifierReward: could not load a sequence-classification reward model from model={model!r}: {_why_not_loadable(model)}") from error
        if self.tokenizer.pad_token is None:
            # Padding is masked out; the classification head reads the last non-pad token.
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.tokenizer.truncation_side = "left"  # without append_eos (with it, reward_input_ids cuts from the left too)
        self.label = self._label_index(label)
        self.score = score
        if template == "chat" and not self.tokenizer.chat_template:
            raise ConfigError(f"HFClassifierReward: template='chat' but the tokenizer of {model!r} has no chat template; give a format string such as '{{prompt}} {{completion}}' instead")
        self.template = template
        if append_eos is None:
            append_eos = self.model.config.num_labels == 1 and self.tokenizer.eos_token_id is not None
        if append_eos and self.tokenizer.eos_token_id is None:
            raise ConfigError(f"HFClassifierReward: append_eos=True but the tokenizer of {model!r} has no EOS token; set append_eos: false")
        self.append_eos = append_eos
        self.adds_bos = adds_bos(self.tokenizer)
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval().requires_grad_(False)

    def _label_index(self, label: int | str) -> int:
        if isinstance(label, int):
            index = label
        else:
            names = {name: int(i) for i, name in self.model.config.id2label.items()}
            if label not in names:
                raise ConfigError(f"HFClassifierReward: the reward model has no label {label!r}; its labels are {sorted(names)}; set label to one of them or to an index")
            index = names[label]
        check_range(self, "label", index, 0, self.model.config.num_labels - 1, integer=True)
        return index

    def _render(self, prompt: str, completion: str) -> str:
        if self.template == "chat":
            turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
            return self.tokenizer.apply_chat_template(turns, tokenize=False)
        return self.template.format(prompt=prompt, completion=completion)

    def _tokenize(self, texts: list[str], add_special_tokens: bool) -> dict[str, torch.Tensor]:
        """Token ids right-padded as in training, with the attention mask; with ``append_eos`` each row
        is laid out by ``reward_input_ids`` ([BOS] + text + one EOS, whatever the tokenizer's conventions)."""
        if self.append_eos:
            # The BOS a tokenizer adds on its own, as the training encoder puts it; a rendered chat template brings its own.
            rows = [reward_input_ids(self.tokenizer, text, self.adds_bos and add_special_tokens, self.max_length) for text in texts]
        else:
            rows = self.tokenizer(texts, truncation=True, max_length=self.max_length, add_special_tokens=add_special_tokens)["input_ids"]
        return {"input_ids": pad_right(rows, self.tokenizer.pad_token_id), "attention_mask": pad_right([[1] * len(r) for r in rows], 0)}

    def _logits(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class logits [batch, labels], float32."""
        head = getattr(self.model, "score", None)
        if isinstance(head, torch.nn.Linear):
            # A causal-LM classifier (Llama, GPT-2, OPT, Qwen, ...): read its head on the last attended
            # token, as RewardModel trains it. Hugging Face's own forward reads the last token that is
            # not the pad id, which skips a final EOS when pad == EOS (GPT-2, Llama without a pad token).
            hidden = self.model.base_model(**inputs, use_cache=False).last_hidden_state
            return head(pool_last_token(hidden, inputs["attention_mask"])).to(torch.float32)
        return self.model(**inputs).logits.to(torch.float32)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
        chat = self.template == "chat"
        texts = [self._render(p, c) for p, c in zip(prompts, completions)]
        scores = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            # A rendered chat template already holds its special tokens (BOS): add none on top.
            inputs = {k: v.to(self.device) for k, v in self._tokenize(batch, add_special_tokens=not chat).items()}
            logits = self._logits(inputs)
            if self.score == "logit":
                scores.append(logits[:, self.label])
            elif self.score == "probability":
                scores.append(torch.softmax(logits, dim=-1)[:, self.label])
            else:
                # log p - log(1 - p) = logit_label - logsumexp(other logits): no 1 - p that rounds to 0.
                others = torch.cat([logits[:, : self.label], logits[:, self.label + 1 :]], dim=-1)
                scores.append(logits[:, self.label] - torch.logsumexp(others, dim=-1))
        return torch.cat(scores).cpu() if scores else torch.zeros(0)


def _why_not_loadable(model: str) -> str:
    path = os.path.abspath(os.path.expanduser(model))
    if os.path.isdir(path):
        return f"the folder {path} exists but holds no loadable classifier and tokenizer (config.json, *.safetensors, tokenizer files); write both there with save_pretrained (a lit_align RewardModel run exports them to <run>/hf_model)."
    return (f"there is no folder {path}, and no hub copy of that name is cached (this machine may have no hub access). "
            "Train and export a reward model first (python -m lit_align fit --config configs/reward_model.yaml writes data/embedded/reward_model) or fix the path.")
