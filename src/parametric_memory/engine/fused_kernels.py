"""Liger's Triton kernels for RMSNorm, the SwiGLU MLP and rotary position embeddings, put
into a loaded Llama-family model on CUDA (`pip install "parametric-memory[cuda]"`; without
the package, nothing changes).

A small model's decode step is a long chain of tiny kernels: HF's RMSNorm alone is six
(cast, square, mean, rsqrt, two products), the MLP's activation two more. One fused kernel
each cuts those launches, which bound a small model's decode step and teacher pass. HF's
RoPE is ten kernels per layer (for each of q and k: two products, a sum, and `rotate_half`'s
negation and concatenation); Liger's one kernel also speeds up a graphed LoRA training step
(measured: see benchmarks/RESULTS.md).

Only this model's own modules change (their `forward`); other models in the process, on
any device, keep transformers' code.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
from collections.abc import Callable, Iterator
from types import MethodType

import torch
from torch import nn

logger = logging.getLogger(__name__)

_SUPPORTED_MODEL_TYPES = frozenset({"llama"})
"""Measured on; other RMSNorm + SwiGLU architectures would likely work but are untested."""
_SWIGLU_ACTIVATIONS = frozenset({"silu", "swish"})
_SWAPPED_MARK = "_parametric_memory_fused"
_ORIGINAL_ATTRIBUTE = "_parametric_memory_original"


def fused_kernels_available() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def use_fused_kernels(model: nn.Module) -> int:
    """Swap Liger's kernels into `model`'s RMSNorm, gated-MLP and attention modules when it is a
    supported architecture on CUDA and Liger is installed (the CUDA backend calls it unless
    `EngineConfig.fused_kernels` is off). Returns how many modules now use them."""
    config = getattr(model, "config", None)
    if (
        config is None
        or getattr(config, "model_type", None) not in _SUPPORTED_MODEL_TYPES
        or next(model.parameters()).device.type != "cuda"
        or not fused_kernels_available()
    ):
        return 0
    from liger_kernel.transformers.functional import liger_rms_norm, liger_swiglu
    from liger_kernel.transformers.rope import liger_rotary_pos_emb

    swiglu = getattr(config, "hidden_act", None) in _SWIGLU_ACTIVATIONS
    swapped = 0
    for module in model.modules():
        if _is_rms_norm(module):
            module.forward = MethodType(_rms_norm_forward(liger_rms_norm), module)
            swapped += 1
        elif swiglu and _is_gated_mlp(module):
            module.forward = MethodType(_mlp_forward(liger_swiglu), module)
            swapped += 1
        elif _rotary_function_of(module) is not None:
            rotary = _rows_as_one_sequence(liger_rotary_pos_emb)
            module.forward = MethodType(_attention_forward(rotary), module)
            swapped += 1
    logger.debug("Liger kernels in %d modules", swapped)
    return swapped


@contextlib.contextmanager
def transformers_own_modules(model: nn.Module) -> Iterator[None]:
    """Inside, the modules `use_fused_kernels` swapped run transformers' code again; for code
    going through `torch.compile`, which fuses these operations itself and cannot trace
    Liger's kernels (torch 2.11, liger-kernel 0.8.5: a float64 scalar breaks their Triton
    code, and each break splits the compiled graph)."""
    swapped = {m: vars(m)["forward"] for m in model.modules() if _is_swapped(m)}
    for module in swapped:
        del module.forward
    try:
        yield
    finally:
        for module, forward in swapped.items():
            module.forward = forward


def _is_swapped(module: nn.Module) -> bool:
    forward = vars(module).get("forward")
    return getattr(getattr(forward, "__func__", None), _SWAPPED_MARK, False)


def _is_rms_norm(module: nn.Module) -> bool:
    return (
        type(module).__name__.endswith("RMSNorm")
        and isinstance(getattr(module, "weight", None), nn.Parameter)
        and hasattr(module, "variance_epsilon")
    )


def _is_gated_mlp(module: nn.Module) -> bool:
    return type(module).__name__.endswith("MLP") and all(
        hasattr(module, name) for name in ("gate_proj", "up_proj", "down_proj")
    )


def _rotary_function_of(module: nn.Module) -> Callable | None:
    """transformers' `apply_rotary_pos_emb` that `module`'s forward calls, if it is an
    attention module of a modeling file that has one."""
    if not (type(module).__name__.endswith("Attention") and hasattr(module, "q_proj")):
        return None
    function = getattr(sys.modules[type(module).__module__], "apply_rotary_pos_emb", None)
    return getattr(function, _ORIGINAL_ATTRIBUTE, function)


def _rms_norm_forward(liger_rms_norm):
    def forward(self, hidden_states):
        # casting_mode "llama": statistics in float32, scaled input cast back, then weight.
        return liger_rms_norm(hidden_states, self.weight, self.variance_epsilon)

    setattr(forward, _SWAPPED_MARK, True)
    return forward


def _mlp_forward(liger_swiglu):
    def forward(self, x):
        # gate_proj/up_proj/down_proj are looked up at call time: LoRA layers peft injects
        # later are used.
        return self.down_proj(liger_swiglu(self.gate_proj(x), self.up_proj(x)))

    setattr(forward, _SWAPPED_MARK, True)
    return forward


def _rows_as_one_sequence(rotary_kernel):
    """`rotary_kernel` on the batch's rows laid end to end as one sequence, each token with
    its own cos/sin. Liger's kernel takes the number of rows as a compile-time constant, so
    every new batch size compiled it again: slot training and teacher passes, whose row
    counts vary, were slower than with transformers' RoPE until the same shapes came back.
    The sequence length is an ordinary argument."""

    def rotary(q, k, cos, sin):
        batch, _, length, _ = q.shape
        cos, sin = (t.expand(batch, length, -1).reshape(1, batch * length, -1) for t in (cos, sin))
        q, k = rotary_kernel(_as_one_row(q), _as_one_row(k), cos, sin)
        return _as_rows(q, batch), _as_rows(k, batch)

    return rotary


def _as_one_row(states: torch.Tensor) -> torch.Tensor:
    """[batch, heads, length, dim] -> [1, heads, batch * length, dim] (a view for the layout
    transformers' attention gives its projections)."""
    batch, heads, length, dim = states.shape
    return states.transpose(1, 2).reshape(1, batch * length, heads, dim).transpose(1, 2)


def _as_rows(states: torch.Tensor, batch: int) -> torch.Tensor:
    _, heads, tokens, dim = states.shape
    return states.transpose(1, 2).reshape(batch, tokens // batch, heads, dim).transpose(1, 2)


def _attention_forward(rotary_kernel, kernel_device: str = "cuda"):
    def forward(self, *args, **kwargs):
        # transformers' attention forward calls its modeling file's `apply_rotary_pos_emb`.
        # It is swapped for this call only, so other models and code compiled inside
        # `transformers_own_modules` keep transformers' function. The swap restores the
        # original, not what it found, so overlapping calls from threads cannot leave the
        # kernel in place; another device's tensor meeting the kernel then is passed on.
        modeling = sys.modules[type(self).__module__]
        original = _rotary_function_of(self)

        def rotary(q, k, cos, sin, *rest, **options):
            if q.device.type == kernel_device:
                return rotary_kernel(q, k, cos, sin)
            return original(q, k, cos, sin, *rest, **options)

        setattr(rotary, _ORIGINAL_ATTRIBUTE, original)
        modeling.apply_rotary_pos_emb = rotary
        try:
            return type(self).forward(self, *args, **kwargs)
        finally:
            modeling.apply_rotary_pos_emb = original

    setattr(forward, _SWAPPED_MARK, True)
    return forward
