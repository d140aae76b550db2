"""AdamW whose two moments are stored in bfloat16: half the optimiser memory of ``torch.optim.AdamW``.

The update is Loshchilov & Hutter's AdamW ("Decoupled Weight Decay Regularization", ICLR 2019,
Algorithm 2) exactly as ``torch.optim.AdamW`` computes it (same operations in the same order):

    θ ← θ·(1 − lr·λ);  m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·g²
    θ ← θ − lr/(1 − β1^t) · m / (√v / √(1 − β2^t) + ε)

Only the storage differs: per parameter, ``m`` and ``v`` are widened to fp32, updated and used in
fp32, then written back to bf16. bf16 keeps fp32's exponent range, so ``v`` (squares of small
gradients) underflows no sooner than in fp32; what it lacks is mantissa (8 bits, relative spacing
2^-8). With β2 = 0.999 an update moves ``v`` by 0.1% per step, below half that spacing, so
round-to-nearest would freeze ``v``: it would never decay and small new ``g²`` would be lost.
Stochastic rounding (round up with probability equal to the distance from the lower neighbour) is
unbiased, so the stored moments follow the fp32 ones in expectation; this is the standard remedy for
bf16 accumulators (Gupta et al. 2015, "Deep Learning with Limited Numerical Precision"; Zamirai et
al. 2020, "Revisiting BFloat16 Training"; torchao's low-bit optimisers). Its random bits come from a
generator owned by the optimiser (seeded by ``seed``, saved in its state dict), so a run is
reproducible, resumes exactly, and the global RNG that sampling and dropout draw from is untouched.

``state_dtype: float32`` stores fp32 moments: then every value equals ``torch.optim.AdamW``'s
(``foreach=False``), which the tests check bit for bit. The parameters keep their own dtype.
"""

from __future__ import annotations

from typing import Any, Iterable, Literal

import torch

MOMENTS = ("exp_avg", "exp_avg_sq")  # torch.optim.AdamW's names, so its state dicts load here and back
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
CHUNK = 1 << 20  # elements updated at a time in a large parameter (step_parameter)


def stochastic_round_to_bf16(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """fp32 ``x`` rounded to bf16, up or down at random with the probabilities that make it unbiased.

    bf16 is the top 16 bits of an fp32; adding uniform noise in [0, 2^16) to the low 16 bits of the
    bit pattern and truncating rounds the magnitude up with probability (low bits) / 2^16, for either
    sign (the sign bit is not touched by the carry of a finite value). Zeros and infinities have zero
    low bits, so they never carry and stay as they are; a NaN stays non-finite.
    """
    bits = x.contiguous().view(torch.int32)
    noise = torch.randint(0, 1 << 16, bits.shape, dtype=torch.int32, device=x.device, generator=generator)
    return noise.add_(bits).bitwise_and_(-65536).view(torch.float32).to(torch.bfloat16)  # low bits zero: the cast is exact


class LowMemoryAdamW(torch.optim.Optimizer):
    """AdamW with bf16 moments (stochastic rounding), for the memory-bound; see the module docstring.

    Args:
        params: Parameters or parameter groups, as for any torch optimiser.
        lr, betas, eps, weight_decay: As ``torch.optim.AdamW`` (same defaults).
        state_dtype: ``bfloat16`` (2 bytes per moment value instead of 4) or ``float32`` (exactly
            ``torch.optim.AdamW``).
        stochastic_rounding: Round the bf16 moments stochastically (unbiased); False rounds to nearest,
            which stalls ``v`` for β2 close to 1 (module docstring).
        seed: Seed of the rounding's own random generator.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        state_dtype: Literal["bfloat16", "float32"] = "bfloat16",
        stochastic_rounding: bool = True,
        seed: int = 0,
    ) -> None:
        if state_dtype not in DTYPES:
            raise ValueError(f"LowMemoryAdamW: state_dtype must be one of {sorted(DTYPES)}, got {state_dtype!r}")
        if not (lr >= 0 and eps >= 0 and weight_decay >= 0 and 0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"LowMemoryAdamW: need lr, eps, weight_decay >= 0 and betas in [0, 1), got lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self.state_dtype = DTYPES[state_dtype]
        self.stochastic_rounding = stochastic_rounding
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            # One stream per device, each seeded from `seed` and the device, so CPU and GPU runs are each reproducible.
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed + (device.index or 0))
        return self._generators[device]

    def _store(self, target: torch.Tensor, value: torch.Tensor, stochastic: bool) -> None:
        if target.dtype == torch.bfloat16 and stochastic:
            target.copy_(stochastic_round_to_bf16(value, self._generator(value.device)))
        elif target is not value:
            target.copy_(value)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self.step_parameter(param, group)
        return loss

    @torch.no_grad()
    def step_parameter(self, param: torch.Tensor, group: dict[str, Any]) -> None:
        """One AdamW update of ``param`` from its ``.grad`` (also what ``optimizer_in_backward`` calls)."""
        if param.grad.is_sparse:
            raise RuntimeError("LowMemoryAdamW does not support sparse gradients")
        state = self.state[param]
        if not state:
            state["step"] = torch.tensor(0.0)
            for name in MOMENTS:
                state[name] = torch.zeros_like(param, dtype=self.state_dtype, memory_format=torch.preserve_format)
        state["step"] += 1
        tensors = (param, param.grad, state["exp_avg"], state["exp_avg_sq"])
        if param.numel() <= CHUNK or not all(t.is_contiguous() for t in tensors):
            return self._update(*tensors, group, state["step"].item())
        # The update is elementwise, so slices give the same values while the fp32 temporaries stay a
        # few MB instead of several copies of the largest weight (the LM head, at the peak of backward).
        flat = [t.view(-1) for t in tensors]
        for start in range(0, param.numel(), CHUNK):
            self._update(*(t[start : start + CHUNK] for t in flat), group, state["step"].item())

    def _update(self, param, grad, exp_avg_stored, exp_avg_sq_stored, group: dict[str, Any], step: float) -> None:
        lr, (beta1, beta2), eps, weight_decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        # Work in fp32: for fp32 parameters and state these are the stored tensors themselves (no copy).
        weights, grad = param.float(), grad.float()
        exp_avg, exp_avg_sq = exp_avg_stored.float(), exp_avg_sq_stored.float()
        if weight_decay != 0:
            weights.mul_(1 - lr * weight_decay)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        self._store(exp_avg_stored, exp_avg, self.stochastic_rounding)
        self._store(exp_avg_sq_stored, exp_avg_sq, self.stochastic_rounding)
        # torch's AdamW: (sqrt(v) / sqrt(1 - β2^t)) + ε, here in place where v is a temporary copy.
        denom = exp_avg_sq.sqrt() if exp_avg_sq is exp_avg_sq_stored else exp_avg_sq.sqrt_()
        denom.div_((1 - beta2**step) ** 0.5).add_(eps)
        weights.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1**step))
        self._store(param, weights, stochastic=False)  # low-precision weights round to nearest, as torch's AdamW

    def state_dict(self) -> dict[str, Any]:
        saved = super().state_dict()
        saved["rounding_generators"] = {str(device): g.get_state() for device, g in self._generators.items()}
        return saved

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # torch's loader casts every floating state tensor to its parameter's dtype (bf16 moments would
        # come back fp32, doubling the memory), so the moments go around it and are placed here.
        moments = {key: {n: s[n] for n in MOMENTS if n in s} for key, s in state_dict["state"].items()}
        rest = {key: {n: v for n, v in s.items() if n not in MOMENTS} for key, s in state_dict["state"].items()}
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "rounding_generators"} | {"state": rest})
        saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        params = [p for group in self.param_groups for p in group["params"]]
        for key, param in zip(saved_ids, params):
            for name, value in moments.get(key, {}).items():
                self.state[param][name] = value.to(device=param.device, dtype=self.state_dtype, copy=True)
        for device, generator_state in state_dict.get("rounding_generators", {}).items():
            self._generator(torch.device(device)).set_state(generator_state)
