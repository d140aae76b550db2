"""Turning dropout off in a loaded model, as TRL does by default (``disable_dropout=True``).

Why: the preference losses compare the policy's log-probs with the reference's, and the reference
always runs in eval mode. With dropout left on in the policy the two differ by dropout noise even
at the start, so the first DPO loss is not log 2 (0.7215 on an OPT checkpoint, issue 23 item 6)
and the implicit rewards beta * log(pi/pi_ref) are noisy throughout. TRL's DPO/KTO/ORPO/reward
trainers zero every dropout by default for this reason.
"""

from __future__ import annotations

from torch import nn

# Float attributes holding a drop probability that model code reads at call time, e.g. OPT's
# ``nn.functional.dropout(h, p=self.dropout, training=self.training)`` and its ``layerdrop``;
# zeroing only ``nn.Dropout`` modules (what TRL's ``disable_dropout_in_model`` does) misses these.
_DROP_NAMES = ("dropout", "layerdrop", "drop_path")


def disable_dropout(model: nn.Module) -> int:
    """Set every drop probability in ``model`` to 0 (``nn.Dropout`` modules and the float
    ``*dropout*`` / ``layerdrop`` attributes model code passes to ``F.dropout``); returns how many.

    The model's config is left as it was, so an exported checkpoint keeps its own dropout settings
    for whoever fine-tunes it next.
    """
    changed = 0
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            changed += module.p != 0
            module.p = 0.0
            continue
        for name, value in list(vars(module).items()):
            if isinstance(value, float) and not isinstance(value, bool) and 0.0 < value <= 1.0 and any(k in name for k in _DROP_NAMES):
                setattr(module, name, 0.0)
                changed += 1
    return changed
