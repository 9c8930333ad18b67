"""Where the GPU time of one Llama-1B-shape distillation step goes (random weights, LoRA r16
on the 7 projections, 128 rows x 128 tokens, 64 answer tokens, top-64 targets): the eager
`fast_distillation.train_step` (`speed.py`'s "optimised" step) under torch.profiler, kernels
grouped by kind; then the same step with its forward through `torch.compile` (backward
from AOTAutograd), timed against the eager step. argv: rows (default 128)."""

import random
import sys
import time
from collections import defaultdict

import torch
from speed import PAD, Sizes, build_model, random_example, step_flops, with_lora
from torch.profiler import ProfilerActivity, profile

from parametric_memory.engine import fast_distillation
from parametric_memory.engine.fast_distillation import collate, train_step
from parametric_memory.engine.fused_kernels import use_fused_kernels

KINDS = {
    "gemm": ("gemm", "nvjet", "sm90_xmma", "cutlass", "gemv", "ampere_", "sm80_"),
    "attention": ("flash", "fmha", "attention", "cudnn"),
    "copy/cast": ("copy", "cast", "convert", "cat"),
    "optimizer": ("adam", "multi_tensor", "foreach"),
    "reduction": ("reduce", "sum", "norm"),
    "softmax/kl": ("softmax", "log_softmax", "gather", "scatter", "topk"),
    "triton (Liger)": ("triton", "_kernel"),
    "elementwise": ("elementwise", "vectorized", "unrolled", "index"),
}


def kind(name: str) -> str:
    lowered = name.lower()
    return next((k for k, keys in KINDS.items() if any(key in lowered for key in keys)), "other")


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 128
    sizes = Sizes()
    model = build_model("llama-1b", torch.device("cuda"), torch.bfloat16)
    use_fused_kernels(model)
    student = with_lora(model, sizes.lora_rank)
    student.train()
    rng = random.Random(0)
    batch = [random_example(sizes, sizes.student_tokens, model, rng) for _ in range(rows)]
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0, fused=True)
    collated = collate(batch, PAD, torch.device("cuda"))
    for _ in range(3):
        train_step(student, optimizer, params, collated, 1.0)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        train_step(student, optimizer, params, collated, 1.0)
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    total = sum(e.device_time_total for e in events)
    by_kind: dict[str, float] = defaultdict(float)
    for event in events:
        by_kind[kind(event.key)] += event.device_time_total
    print(f"rows {rows}: GPU busy {total / 1e3:.1f} ms in {sum(e.count for e in events)} kernels")
    for name, microseconds in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {name:16s} {microseconds / 1e3:8.1f} ms  {100 * microseconds / total:5.1f}%")
    for event in sorted(events, key=lambda e: -e.device_time_total)[:25]:
        ms = event.device_time_total / 1e3
        print(f"{ms:8.2f} ms {event.count:5d}x  {event.key[:110]}")
    flops = step_flops(student, rows * sizes.student_tokens, sizes.student_tokens, rows * 65)
    step = lambda: train_step(student, optimizer, params, collated, 1.0)  # noqa: E731
    report("eager", timed_steps(step), flops["tflops"])
    # The forward only: the loss function swaps the LoRA layers' forwards, which dynamo
    # cannot trace.
    logits = fast_distillation.answer_position_logits
    fast_distillation.answer_position_logits = torch.compile(logits)
    start = time.perf_counter()
    step()
    torch.cuda.synchronize()
    print(f"compiled: first step {time.perf_counter() - start:.1f} s")
    report("compiled", timed_steps(step), flops["tflops"])


def timed_steps(step, count: int = 5) -> float:
    step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(count):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / count


def report(name: str, seconds: float, flops: float) -> None:
    achieved = flops / seconds / 1e12
    percent = 100 * achieved / 989
    print(f"{name}: {seconds * 1e3:.1f} ms a step, {achieved:.0f} TFLOP/s ({percent:.1f}% of 989)")


if __name__ == "__main__":
    main()
