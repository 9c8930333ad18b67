"""Where the GPU time goes, random weights of real shapes, bf16, the engine's kernels (Liger
RMSNorm/SwiGLU/RoPE on CUDA, `fused_kernels.py`), one process, one card.

`train`: the distillation step (LoRA r16 on the 7 projections, 128 rows x 128 tokens, 64
answer tokens, top-64 targets) of the Llama-1B shape (`train135m`: the SmolLM2-135M shape),
CUDA-graphed as the engine trains (`GraphedStudentTrainer`), timed in three variants:
  add-after  the low-rank update added to the base product by a second GEMM (before fac17c4),
             transformers' RoPE;
  epilogue   the base GEMM accumulates into the update (`slot_linear.LoraLinear` since
             fac17c4), transformers' RoPE;
  engine     epilogue and Liger's RoPE kernel (the engine's modules).
then the eager step profiled: kernels and aten ops by GPU time.
`decode`: the SmolLM2-135M-shape graphed decode step at batch 128 (300-token prompts, 64 new
tokens): whole call, prefill alone, graph replays, profiles of a replay and of the prefill;
then the whole call without Liger's RoPE and with other attention kernels for the decode
step (`attention` below).
argv: sections (default "train,decode").

The first call (h100-call1) ran this file as of fac17c4, whose "+rope" variant patched
transformers' function globally; the engine does the same per attention module since."""

import contextlib
import functools
import random
import sys
import time

import torch
import torch.nn.functional as F
from speed import (
    PAD,
    GraphedTrainer,
    Sizes,
    build_model,
    engine_kernels,
    fast_generate,
    free,
    left_padded_prompts,
    random_example,
    step_flops,
    with_lora,
)
from torch.autograd.function import once_differentiable
from torch.profiler import ProfilerActivity, profile

from parametric_memory.engine import fast_generation, fused_kernels, student_lora
from parametric_memory.engine.fast_distillation import collate, train_step

PEAK = 989.0


class AddAfterLoraLinear(torch.autograd.Function):
    """`LoraLinear` as of 62dc4b3: base product, then the update added by a second GEMM."""

    @staticmethod
    def forward(ctx, x, x_lora, weight, bias, a, b):
        ctx.input_shape = x.shape
        flat = x.reshape(-1, x.shape[-1])
        xa = flat @ a
        ctx.save_for_backward(flat, weight, a, b, xa)
        y = F.linear(flat, weight, bias).addmm_(xa, b)
        return y.view(*x.shape[:-1], b.shape[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, weight, a, b, xa = ctx.saved_tensors
        grad_y = grad_y.reshape(-1, grad_y.shape[-1])
        grad_xa = grad_y @ b.t()
        grad_x = (grad_y @ weight).addmm_(grad_xa, a.t()).view(ctx.input_shape)
        return grad_x, None, None, None, x.t() @ grad_xa, xa.t() @ grad_y


@contextlib.contextmanager
def transformers_rope(model):
    """The engine's modules, but transformers' RoPE: the swapped attention forwards out."""
    attention = [m for m in model.modules() if fused_kernels._rotary_function_of(m)]
    forwards = {m: vars(m).pop("forward") for m in attention if "forward" in vars(m)}
    try:
        yield
    finally:
        for module, forward in forwards.items():
            module.forward = forward


@contextlib.contextmanager
def variant(name: str, model):
    saved_lora = student_lora.LoraLinear
    if name == "add-after":
        student_lora.LoraLinear = AddAfterLoraLinear
    try:
        with contextlib.nullcontext() if name == "engine" else transformers_rope(model):
            yield
    finally:
        student_lora.LoraLinear = saved_lora


def seconds_per_call(function, count: int) -> float:
    function()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(count):
        function()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / count


def print_profile(function, top: int = 30) -> None:
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        function()
        torch.cuda.synchronize()
    events = prof.key_averages()
    kernels = [e for e in events if e.device_type.name == "CUDA" and e.device_time_total > 0]
    busy = sum(e.device_time_total for e in kernels)
    print(f"GPU busy {busy / 1e3:.2f} ms in {sum(e.count for e in kernels)} kernels")
    for e in sorted(kernels, key=lambda e: -e.device_time_total)[:top]:
        print(f"  {e.device_time_total / 1e3:8.3f} ms {e.count:5d}x  {e.key[:120]}")
    ops = [e for e in events if e.key.startswith("aten::") and e.self_device_time_total > 0]
    print("aten ops by own GPU time:")
    for e in sorted(ops, key=lambda e: -e.self_device_time_total)[:top]:
        print(f"  {e.self_device_time_total / 1e3:8.3f} ms {e.count:5d}x  {e.key}")


def train_section(shape: str) -> None:
    sizes = Sizes()
    rows = 128
    model = build_model(shape, torch.device("cuda"), torch.bfloat16)
    student = with_lora(model, sizes.lora_rank)
    rng = random.Random(0)
    batch = [random_example(sizes, sizes.student_tokens, model, rng) for _ in range(rows)]
    flops = step_flops(student, rows * sizes.student_tokens, sizes.student_tokens, rows * 65)
    student.train()
    with engine_kernels(student):
        for name in ("add-after", "epilogue", "engine"):
            with variant(name, student):
                trainer = GraphedTrainer(student, rows)
                seconds = seconds_per_call(functools.partial(trainer.step, batch), 10)
                tflops = flops["tflops"] / seconds / 1e12
                print(
                    f"train {shape} {name:10s} graphed: {seconds * 1e3:.1f} ms a step, "
                    f"{tflops:.0f} TFLOP/s ({100 * tflops / PEAK:.1f}% of {PEAK:.0f})"
                )
                del trainer
                student.zero_grad(set_to_none=True)
                free()
        params = [p for p in student.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0, fused=True)
        collated = collate(batch, PAD, torch.device("cuda"))
        step = lambda: train_step(student, optimizer, params, collated, 1.0)  # noqa: E731
        eager = seconds_per_call(step, 5)
        print(f"train {shape} engine eager: {eager * 1e3:.1f} ms a step")
        print_profile(step)


def decode_section() -> None:
    sizes = Sizes()
    model = build_model("smollm2-135m", torch.device("cuda"), torch.bfloat16)
    ids, mask = left_padded_prompts(128, sizes.prompt_tokens, model, seed=0)
    call = functools.partial(fast_generate, model, ids, mask, sizes.new_tokens)
    with engine_kernels(model):
        reference = call()
        whole = seconds_per_call(call, 3)
        prefill = seconds_per_call(lambda: fast_generate(model, ids, mask, 1), 3)
        print(
            f"decode batch 128: {whole * 1e3:.1f} ms a call of {sizes.new_tokens} tokens "
            f"({128 * sizes.new_tokens / whole:.0f} tok/s), prefill alone {prefill * 1e3:.1f} ms"
        )
        runner = next(reversed(fast_generation._RUNNERS[model].values()))
        print(f"cache length bucket {runner.length}")
        replay = seconds_per_call(runner.graph.replay, 20)
        print(f"graph replay: {replay * 1e3:.3f} ms a step")
        print("one graph replay, profiled:")
        print_profile(runner.graph.replay, top=25)
        print("the prefill call, profiled:")
        print_profile(lambda: fast_generate(model, ids, mask, 1), top=25)
        for name, context in attention_variants(model):
            fast_generation.release_graphs(model)
            with context:
                try:
                    tokens = call()
                    seconds = seconds_per_call(call, 3)
                except RuntimeError as error:
                    print(f"decode {name}: failed: {str(error)[:200]}")
                    continue
            same = (tokens == reference).all(1).float().mean().item()
            print(
                f"decode {name}: {seconds * 1e3:.1f} ms a call "
                f"({128 * sizes.new_tokens / seconds:.0f} tok/s), rows as the engine's {same:.0%}"
            )


def attention_variants(model):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    yield "transformers' RoPE", transformers_rope(model)
    yield "SDPA efficient-attention backend", sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION)
    yield "SDPA math backend", sdpa_kernel(SDPBackend.MATH)
    yield "bmm decode attention", one_token_attention_by_bmm()


@contextlib.contextmanager
def one_token_attention_by_bmm():
    """Decode steps (one query token) attend by two batched GEMMs over the key/value heads
    (query heads of a group stacked as rows), not through SDPA; the prefill keeps SDPA."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    sdpa = ALL_ATTENTION_FUNCTIONS._global_mapping["sdpa"]

    def attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
        if query.shape[2] != 1:
            return sdpa(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
        batch, heads, _, dim = query.shape
        grouped = query.view(batch, key.shape[1], heads // key.shape[1], dim)
        scores = torch.matmul(grouped, key.transpose(2, 3)).mul_(scaling).add_(attention_mask)
        weights = scores.softmax(-1, dtype=torch.float32).to(value.dtype)
        output = torch.matmul(weights, value)  # [batch, kv heads, group, dim]
        return output.view(batch, 1, heads, dim), None

    ALL_ATTENTION_FUNCTIONS._global_mapping["sdpa"] = attention
    try:
        yield
    finally:
        ALL_ATTENTION_FUNCTIONS._global_mapping["sdpa"] = sdpa


if __name__ == "__main__":
    sections = (sys.argv[1] if len(sys.argv) > 1 else "train,decode").split(",")
    if "train" in sections:
        train_section("llama-1b")
        free()
    if "train135m" in sections:
        train_section("smollm2-135m")
        free()
    if "decode" in sections:
        decode_section()
