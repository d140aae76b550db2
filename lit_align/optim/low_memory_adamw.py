"""AdamW whose two moments are stored in bfloat16: half the optimiser memory of ``torch.optim.AdamW``.

The update is Loshchilov & Hutter's AdamW ("Decoupled Weight Decay Regularization", ICLR 2019,
Algorithm 2), computed by the kernel of ``torch.optim.AdamW(fused=True)``, which the recipes' AdamW
runs (``use_fused_adam``):

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
Cost: widening, rounding and the random bits add a few passes over the moments to each step
(``benchmarks/optimizer_step.py``).

``state_dtype: float32`` stores fp32 moments: then every value equals the fused ``torch.optim.AdamW``'s,
which the tests check bit for bit. The parameters keep their own dtype (the update runs on an fp32
copy of a low-precision weight, written back rounded to nearest).
"""

from __future__ import annotations

from typing import Any, Iterable, Literal

import torch

MOMENTS = ("exp_avg", "exp_avg_sq")  # torch.optim.AdamW's names, so its state dicts load here and back
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
# Elements updated at a time in a large parameter (step_parameter). A multiple of every SIMD width, so
# only the last slice ends in the kernel's scalar tail, as in one call over the whole tensor: same bits.
CHUNK = 1 << 20


def round_into_bf16(target: torch.Tensor, x: torch.Tensor, noise: torch.Tensor) -> None:
    """Write fp32 ``x`` into the bf16 ``target``, rounded stochastically with ``noise`` (int32, uniform
    in [0, 2^16); consumed).

    bf16 is the top 16 bits of an fp32; adding the noise to the low 16 bits of the bit pattern and
    truncating rounds the magnitude up with probability (low bits) / 2^16: unbiased, for either sign
    (the carry of a finite value never reaches the sign bit). Zeros and infinities have zero low bits,
    so they never carry and stay as they are; a NaN stays non-finite. The truncated fp32 is exactly a
    bf16 value, so the final conversion does not round again.
    """
    target.copy_(noise.add_(x.contiguous().view(torch.int32)).bitwise_and_(-65536).view(torch.float32))


def stochastic_round_to_bf16(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """fp32 ``x`` rounded to bf16 stochastically (``round_into_bf16``), with noise from ``generator``."""
    noise = torch.randint(0, 1 << 16, x.shape, dtype=torch.int32, device=x.device, generator=generator)
    out = torch.empty(x.shape, dtype=torch.bfloat16, device=x.device)
    round_into_bf16(out, x, noise)
    return out


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
            # On the parameter's device, as torch's fused AdamW keeps it: its kernel reads the step there.
            state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
            for name in MOMENTS:
                state[name] = torch.zeros_like(param, dtype=self.state_dtype, memory_format=torch.preserve_format)
        state["step"] += 1
        tensors = (param, param.grad, state["exp_avg"], state["exp_avg_sq"])
        if param.numel() <= CHUNK or not all(t.is_contiguous() for t in tensors):
            return self._update(*tensors, state["step"], group)
        # The update is elementwise, so slices give the same values while the fp32 temporaries stay a
        # few MB instead of several copies of the largest weight (the LM head, at the peak of backward).
        flat = [t.view(-1) for t in tensors]
        for start in range(0, param.numel(), CHUNK):
            self._update(*(t[start : start + CHUNK] for t in flat), state["step"], group)

    def _update(self, param, grad, exp_avg_stored, exp_avg_sq_stored, step: torch.Tensor, group: dict[str, Any]) -> None:
        # Widen to fp32 (for fp32 tensors these are the stored tensors themselves, no copy), then
        # torch's fused AdamW kernel: one pass, the same arithmetic as `torch.optim.AdamW` in the recipes.
        weights, grad = param.float(), grad.float()
        exp_avg, exp_avg_sq = exp_avg_stored.float(), exp_avg_sq_stored.float()
        torch._fused_adamw_(
            [weights], [grad], [exp_avg], [exp_avg_sq], [], [step], amsgrad=False, maximize=False,
            lr=group["lr"], beta1=group["betas"][0], beta2=group["betas"][1], weight_decay=group["weight_decay"], eps=group["eps"],
        )
        if exp_avg is not exp_avg_stored:
            if self.stochastic_rounding:
                # One draw of 31 random bits serves both moments: bits 0-15 and 15-30 are each uniform
                # in [0, 2^16), and each moment's rounding is unbiased whatever the other's.
                bits = torch.empty(exp_avg.shape, dtype=torch.int32, device=exp_avg.device).random_(generator=self._generator(exp_avg.device))
                round_into_bf16(exp_avg_sq_stored, exp_avg_sq, (bits >> 15).bitwise_and_(0xFFFF))
                round_into_bf16(exp_avg_stored, exp_avg, bits.bitwise_and_(0xFFFF))
            else:
                exp_avg_stored.copy_(exp_avg)
                exp_avg_sq_stored.copy_(exp_avg_sq)
        if weights is not param:
            param.copy_(weights)  # low-precision weights round to nearest, as torch's AdamW

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
            if "step" in self.state[param]:  # torch's loader leaves it where it was saved; the fused kernel reads it on the device
                self.state[param]["step"] = self.state[param]["step"].to(device=param.device, dtype=torch.float32)
        for device, generator_state in state_dict.get("rounding_generators", {}).items():
            self._generator(torch.device(device)).set_state(generator_state)
