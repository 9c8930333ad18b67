"""Host time of building one 128-row Llama-1B-shape distillation batch (128 tokens, 64
answer tokens, top-64 targets, vocabulary 128,256): `collate`, and loading the graphed
step's static buffers (`_StaticStep.load`), each three times. CPU only."""

import random
import time

import torch
from speed import Sizes, build_model, random_example

from parametric_memory.engine.fast_distillation import _StaticStep, collate


def milliseconds(function) -> float:
    start = time.perf_counter()
    function()
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    sizes = Sizes()
    model = build_model("tiny", torch.device("cpu"), torch.float32)
    model.config.vocab_size = 128256  # only the targets' ids depend on it
    rng = random.Random(0)
    batch = [random_example(sizes, sizes.student_tokens, model, rng) for _ in range(128)]
    static = _StaticStep(
        128, sizes.student_tokens, sizes.answer_tokens, sizes.top_k, torch.device("cpu")
    )
    for _ in range(3):
        print(f"collate {milliseconds(lambda: collate(batch, 0, torch.device('cpu'))):.1f} ms")
    for _ in range(3):
        print(f"load {milliseconds(lambda: static.load(batch, 0)):.1f} ms")


if __name__ == "__main__":
    main()
