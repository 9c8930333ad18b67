"""Speed (issue 5): elicitation decoding, the distillation step, and query latency/memory,
on random-weight models of real shapes (throughput does not depend on weight values).

(a) elicitation: greedy tokens/s of `fast_generation.greedy_generate` with the engine's CUDA
    kernels (`fused_kernels`, where Liger is installed) vs stock HF `generate`, each with its
    baseline measured in the same run, on the plain model (elicitation) and on the model
    wrapped by peft with an active LoRA adapter (answering); no early EOS. `--compiled` adds
    the same decoder with its step compiled (`compile_step=True`; the first call compiles).
(b) distillation: one LoRA student step (forward + backward + clip + fused AdamW), the
    reference step (peft's LoRA, transformers' kernels) vs `fast_distillation`'s steps on
    the engine's kernels, with achieved TFLOP/s and % of the card's bf16 dense peak.
(c) query: latency and peak GPU memory of answering one question the engine's way (on CUDA
    the adapter merged for the call, merge included; no context) vs the same model with
    passages in the prompt.

    python benchmarks/speed.py --out benchmarks/results/speed          # GPU, all shapes
    python benchmarks/speed.py --quick --out /tmp/speed                # CPU smoke test

Prints each table row as it is measured; writes speed.json and speed.md under --out.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import platform
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import peft
import torch
import transformers
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from parametric_memory.engine.backend import choose_backend
from parametric_memory.engine.fast_distillation import (
    GraphedStudentTrainer,
    capturable_adamw,
    collate,
    length_bucketed_batches,
    stack_targets,
    train_step,
)
from parametric_memory.engine.fast_generation import greedy_generate, release_graphs
from parametric_memory.engine.fused_kernels import fused_kernels_available, use_fused_kernels
from parametric_memory.engine.merged_adapter import answering_weights
from parametric_memory.losses import topk_kl_loss
from parametric_memory.method.distillation import answer_logits
from parametric_memory.records import Example, TransferItem

SHAPES: dict[str, dict] = {
    "smollm2-135m": {
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
        "max_position_embeddings": 8192,
        "rope_theta": 100000.0,
    },
    "llama-1b": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "tie_word_embeddings": True,
        "max_position_embeddings": 131072,
        "rope_theta": 500000.0,
    },
    "llama-8b": {
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "tie_word_embeddings": False,
        "max_position_embeddings": 8192,
        "rope_theta": 500000.0,
    },
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 512,
        "tie_word_embeddings": True,
        "max_position_embeddings": 4096,
        "rope_theta": 10000.0,
    },
}
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TOKENS_PER_PASSAGE = 217
"""150 words at 1.45 tokens/word: the first 100 SQuAD dev passages (../shared/data) are
11,540 words and 16,712 SmolLM2 tokens."""
PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0}
PAD = 0
MEMORY_COLUMNS = ("fast peak GiB", "fast +GiB", "HF peak GiB", "HF +GiB")


@dataclass(frozen=True)
class Sizes:
    prompt_tokens: int = 300
    new_tokens: int = 64
    distill_batches: tuple[int, ...] = (32,)
    """Rows of the fixed-length distillation steps; the first also sets the mixed-length one."""
    student_tokens: int = 128
    answer_tokens: int = 64
    top_k: int = 64
    lora_rank: int = 16
    timed_steps: int = 5
    mixed_batches: int = 8
    question_tokens: int = 32
    answer_new_tokens: int = 32
    passages: int = 100
    tokens_per_passage: int = TOKENS_PER_PASSAGE


QUICK = Sizes(
    prompt_tokens=24,
    new_tokens=8,
    distill_batches=(4,),
    student_tokens=32,
    answer_tokens=12,
    top_k=8,
    lora_rank=4,
    timed_steps=2,
    mixed_batches=2,
    question_tokens=8,
    answer_new_tokens=6,
    passages=6,
    tokens_per_passage=16,
)


def main() -> None:
    args = parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    sizes = QUICK if args.quick else Sizes()
    if args.distill_batches:
        sizes = replace(sizes, distill_batches=args.distill_batches)
    shapes = args.shapes or (["tiny"] if args.quick else ["smollm2-135m", "llama-1b", "llama-8b"])
    batches = args.batches or ([1, 4] if args.quick else [1, 32, 128])
    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)
    env = {**environment(device), "compiled_decode": args.compiled}
    env["elicit_models"] = args.elicit_models
    report = {"environment": env, "sizes": asdict(sizes), "rows": {}}
    print(json.dumps(report["environment"]), flush=True)
    for shape in shapes:
        for section in args.sections:
            rows = run_section(section, shape, device, dtype, sizes, batches, report)
            report["rows"].setdefault(section, []).extend(rows)
            free()
            write(report, Path(args.out))


def run_section(section, shape, device, dtype, sizes, batches, report) -> list[dict]:
    """A fresh model per section: earlier sections leave no adapters or caches behind."""
    sections = {"elicit": elicitation_rows, "distill": distillation_rows, "query": query_rows}
    model = build_model(shape, device, dtype)
    return sections[section](model, shape, sizes, batches, report["environment"])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results/speed")
    parser.add_argument("--shapes", type=lambda s: s.split(","), help=",".join(SHAPES))
    parser.add_argument("--batches", type=lambda s: [int(b) for b in s.split(",")])
    parser.add_argument(
        "--sections", type=lambda s: s.split(","), default=["elicit", "distill", "query"]
    )
    parser.add_argument(
        "--distill-batches",
        type=lambda s: tuple(int(b) for b in s.split(",")),
        help="rows per fixed-length distillation step (default 32)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CPU smoke test)")
    parser.add_argument(
        "--compiled", action="store_true", help="elicitation: also the compiled decode step"
    )
    parser.add_argument(
        "--elicit-models",
        type=lambda s: s.split(","),
        default=["plain", "lora"],
        help="elicitation: plain (adapter off) and/or lora (an active adapter)",
    )
    return parser.parse_args()


def environment(device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    return {
        "device": name or "cpu",
        "device_type": device.type,
        "peak_bf16_tflops": peak,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "fused_kernels": fused_kernels_available() and device.type == "cuda",
    }


def build_model(shape: str, device: torch.device, dtype: torch.dtype) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(**SHAPES[shape], bos_token_id=1, eos_token_id=None, pad_token_id=PAD)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, dtype=dtype)
    # No end token: every generation runs its full length, in both implementations.
    model.generation_config.eos_token_id = None
    model.generation_config.max_length = None
    model.requires_grad_(False)
    return model.eval()


def with_lora(model, rank: int):
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=ALL_PROJECTIONS)
    return get_peft_model(model, lora).eval()


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(function: Callable):
    synchronize()
    start = time.perf_counter()
    result = function()
    synchronize()
    return time.perf_counter() - start, result


# (a) elicitation ---------------------------------------------------------------------------


def elicitation_rows(model, shape: str, sizes: Sizes, batches: list[int], env: dict) -> list:
    header(
        f"(a) elicitation, {shape}: prompt ~{sizes.prompt_tokens} tok, "
        f"{sizes.new_tokens} new tok, greedy",
        ["model", "batch", "HF tok/s", "fast tok/s", "speed-up", "fast 1st call s"]
        + ["fast prefill s", "same"]
        + (["compiled tok/s", "speed-up", "1st call s", "same"] if env["compiled_decode"] else []),
    )
    rows = []
    for variant in env["elicit_models"]:
        target = model if variant == "plain" else with_lora(model, sizes.lora_rank)
        hf_generate(target, *left_padded_prompts(1, 8, target, seed=0), 2)  # one-time init
        for batch in batches:
            row = elicitation_row(target, shape, variant, batch, sizes, env["compiled_decode"])
            rows.append(row)
            release_graphs(target)
    return rows


def elicitation_row(model, shape, variant: str, batch: int, sizes: Sizes, compiled: bool) -> dict:
    new = sizes.new_tokens
    warm_ids, warm_mask = left_padded_prompts(batch, sizes.prompt_tokens, model, seed=1)
    ids, mask = left_padded_prompts(batch, sizes.prompt_tokens, model, seed=2)
    first_s, fast_s, fast_out = warm_then_timed(model, (warm_ids, warm_mask), (ids, mask), new)
    with engine_kernels(model):
        # One new token: the prefill (and the cache copy), no decode step.
        prefill_s, _ = timed(lambda: fast_generate(model, ids, mask, 1))
    hf_generate(model, warm_ids, warm_mask, new)  # first-call costs at this batch, as above
    hf_s, hf_out = timed(lambda: hf_generate(model, ids, mask, new))
    assert hf_out.shape[1] == fast_out.shape[1] == ids.shape[1] + new, "stopped early"
    row = {
        "shape": shape,
        "model": variant,
        "batch": batch,
        "hf_tokens_per_s": batch * new / hf_s,
        "fast_tokens_per_s": batch * new / fast_s,
        "speedup": hf_s / fast_s,
        "fast_first_call_s": first_s,
        "fast_prefill_s": prefill_s,
        "rows_identical": rows_identical(hf_out, fast_out),
    }
    cells = [variant, batch, row["hf_tokens_per_s"], row["fast_tokens_per_s"], row["speedup"]]
    cells += [first_s, prefill_s, row["rows_identical"]]
    if compiled:
        release_graphs(model)
        compiled_first_s, compiled_s, out = warm_then_timed(
            model, (warm_ids, warm_mask), (ids, mask), new, compiled=True
        )
        row["compiled_tokens_per_s"] = batch * new / compiled_s
        row["compiled_speedup"] = hf_s / compiled_s
        row["compiled_first_call_s"] = compiled_first_s
        row["compiled_rows_identical"] = rows_identical(hf_out, out)
        cells += [row[f"compiled_{key}"] for key in ELICIT_COMPILED_KEYS]
    print_row(cells)
    return row


ELICIT_COMPILED_KEYS = ("tokens_per_s", "speedup", "first_call_s", "rows_identical")


def warm_then_timed(model, warm_prompts, prompts, new_tokens: int, compiled: bool = False):
    """The fast path on the engine's kernels: seconds of a first call (graph capture, and
    compiling if `compiled`) on `warm_prompts`, then seconds and output of a call on
    `prompts`."""
    with engine_kernels(model):
        first_s, _ = timed(lambda: fast_generate(model, *warm_prompts, new_tokens, compiled))
        seconds, output = timed(lambda: fast_generate(model, *prompts, new_tokens, compiled))
    return first_s, seconds, output


def rows_identical(expected: torch.Tensor, actual: torch.Tensor) -> float:
    return float((expected == actual).all(1).float().mean())


def left_padded_prompts(batch: int, tokens: int, model, seed: int):
    """Random prompts of `tokens` minus up to 10% tokens each, left-padded."""
    generator = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    lengths = torch.randint(
        max(1, tokens - tokens // 10), tokens + 1, (batch,), generator=generator
    )
    ids = torch.full((batch, tokens), PAD)
    mask = torch.zeros((batch, tokens), dtype=torch.long)
    for row, length in enumerate(lengths.tolist()):
        ids[row, tokens - length :] = torch.randint(1, vocab, (length,), generator=generator)
        mask[row, tokens - length :] = 1
    device = next(model.parameters()).device
    return ids.to(device), mask.to(device)


@contextlib.contextmanager
def engine_kernels(model):
    """The model as the engine runs it on CUDA, with Liger's fused RMSNorm, SwiGLU and RoPE where
    installed (`fused_kernels.use_fused_kernels`); transformers' own modules again after, for
    the HF baseline."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    before = {module: vars(module).get("forward") for module in base.modules()}
    use_fused_kernels(base)
    try:
        yield
    finally:
        for module, forward in before.items():
            if forward is None:
                vars(module).pop("forward", None)
            else:
                module.forward = forward


def engine_answer(model, ids, mask, new_tokens: int) -> torch.Tensor:
    """How the engine answers: with the adapter merged for the call where the backend the
    engine picks for this device merges (CUDA; its cost included), then the fast decoder."""
    backend = choose_backend(next(model.parameters()).device)
    with answering_weights(model, merge=backend.merged_answers):
        return fast_generate(model, ids, mask, new_tokens)


def fast_generate(model, ids, mask, new_tokens: int, compiled: bool = False) -> torch.Tensor:
    return greedy_generate(
        model, ids, mask, new_tokens, eos_token_id=None, pad_token_id=PAD, compile_step=compiled
    )


@torch.inference_mode()
def hf_generate(model, ids, mask, new_tokens: int) -> torch.Tensor:
    return model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=PAD,
        eos_token_id=None,
    )


# (b) distillation --------------------------------------------------------------------------


def distillation_rows(model, shape: str, sizes: Sizes, batches: list[int], env: dict) -> list:
    header(
        f"(b) distillation step, {shape}: LoRA r{sizes.lora_rank} on 7 projections, batch "
        f"{'/'.join(map(str, sizes.distill_batches))} x {sizes.student_tokens} tok "
        f"({sizes.answer_tokens} answer)",
        ["step", "batch", "s/step", "tok/s", "TFLOP/s", "% peak", "TFLOP/s (6NT)", "% peak (6NT)"],
    )
    student = with_lora(model, sizes.lora_rank)
    rng = random.Random(0)
    examples = [random_example(sizes, sizes.student_tokens, model, rng) for _ in range(32)]
    rows = []
    for rows_per_step in sizes.distill_batches:
        fixed = (examples * -(-rows_per_step // len(examples)))[:rows_per_step]
        for name, trainer in TRAINERS.items():
            rows.append(fixed_length_row(student, shape, name, trainer, fixed, sizes, env))
            free()
    rows.extend(mixed_length_rows(student, shape, sizes, rng))
    return rows


def random_example(sizes: Sizes, length: int, model, rng: random.Random) -> Example:
    vocab = model.config.vocab_size
    answer = min(sizes.answer_tokens, length - 1)
    ids = [rng.randrange(1, vocab) for _ in range(length)]
    generator = torch.Generator().manual_seed(rng.randrange(1 << 30))
    topk_ids = torch.randint(0, vocab, (answer, sizes.top_k), generator=generator)
    # Teacher log-probs of a distribution with some tail mass left over.
    topk_logprobs = torch.log_softmax(torch.randn(answer, sizes.top_k + 1, generator=generator), -1)
    item = TransferItem("c", "entity", "", "")
    example = Example(item, ids, [], [], answer)
    example.topk_ids, example.topk_logprobs = topk_ids, topk_logprobs[:, :-1].contiguous()
    return example


class ReferenceTrainer:
    """The step of `consolidate.train_student` as of this commit: batch built on the CPU per
    step (`distillation.answer_logits`), fp32 LoRA compute."""

    def __init__(self, model, rows: int):
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        # Fused on a CPU too: `clip_and_step` hands it the skip flag only fused AdamW takes.
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-3, weight_decay=0.0, fused=True)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 1.0)

    def step(self, batch: list[Example]) -> torch.Tensor:
        lens = [e.answer_len for e in batch]
        logits, mask = answer_logits(self.model, [e.student_ids for e in batch], lens, PAD)
        topk_ids, topk_logprobs = stack_targets(batch, logits.device)
        loss = topk_kl_loss(logits, topk_ids, topk_logprobs, mask)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach()


class OptimisedTrainer(ReferenceTrainer):
    """`fast_distillation.train_step`: the batch collated once, and a step that skips a
    non-finite gradient on the device (`optimizer.clip_and_step`)."""

    def step(self, batch: list[Example]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        loss = train_step(self.model, self.optimizer, self.params, collate(batch, PAD, device), 1.0)
        self.scheduler.step()
        return loss


class GraphedTrainer:
    """`fast_distillation.GraphedStudentTrainer`: the whole step replayed from a CUDA graph
    (fp32 LoRA compute, as the reference)."""

    def __init__(self, model, rows: int):
        params = [p for p in model.parameters() if p.requires_grad]
        device = params[0].device
        self.optimizer = capturable_adamw(params, 1e-3, device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 1.0)
        self.trainer = GraphedStudentTrainer(model, self.optimizer, params, 1.0, rows, PAD)

    def step(self, batch: list[Example]) -> torch.Tensor:
        loss, _ = self.trainer.step(batch)
        self.scheduler.step()
        return loss


TRAINERS = {
    "reference": ReferenceTrainer,
    "optimised": OptimisedTrainer,
    "CUDA-graphed": GraphedTrainer,
}


def fixed_length_row(student, shape, name, trainer_class, batch, sizes: Sizes, env) -> dict:
    seconds = train_for(student, trainer_class, [batch] * sizes.timed_steps, warmup=[batch] * 2)
    if math.isnan(seconds):
        print_row([name, len(batch), "out of memory"])
        return {"shape": shape, "step": name, "batch": len(batch), "error": "out of memory"}
    per_step = seconds / sizes.timed_steps
    tokens = len(batch) * sizes.student_tokens
    kept = len(batch) * (sizes.answer_tokens + 1)
    flops = step_flops(student, tokens, sizes.student_tokens, kept)
    row = {
        "shape": shape,
        "step": name,
        "batch": len(batch),
        "seconds_per_step": per_step,
        "tokens_per_s": tokens / per_step,
        **{key: value / per_step / 1e12 for key, value in flops.items()},
    }
    peak = env["peak_bf16_tflops"]
    row["percent_of_peak"] = 100 * row["tflops"] / peak if peak else None
    row["percent_of_peak_6nt"] = 100 * row["tflops_6nt"] / peak if peak else None
    cells = [name, len(batch), per_step, row["tokens_per_s"], row["tflops"]]
    cells.append(row["percent_of_peak"])
    print_row([*cells, row["tflops_6nt"], row["percent_of_peak_6nt"]])
    return row


def train_for(
    student, trainer_class, batches: list[list[Example]], warmup: list[list[Example]]
) -> float:
    """Seconds for steps over `batches` after steps over `warmup` (NaN on OOM). The engine's
    steps run on the engine's kernels (`engine_kernels`), the reference on transformers'."""
    student.train()
    trainer = trainer_class(student, len(batches[0]))
    engine = trainer_class is not ReferenceTrainer
    try:
        with engine_kernels(student) if engine else contextlib.nullcontext():
            for batch in warmup:
                trainer.step(batch)
            seconds, _ = timed(lambda: [trainer.step(batch) for batch in batches])
    except torch.OutOfMemoryError:
        seconds = math.nan
    finally:
        student.eval()
        student.zero_grad(set_to_none=True)
    return seconds


def step_flops(student, tokens: int, sequence: int, kept_positions: int) -> dict[str, float]:
    """FLOPs of one step, two ways.

    `flops`: what a frozen-base LoRA step computes. Base linears: forward 2·N·T plus the
    activation gradients 2·N·T (no weight gradients): 4·N·T. LoRA: forward, activation and
    weight gradients, 6·N_lora·T. Attention scores/values: 12·layers·hidden·sequence per token
    (forward + backward, full square). LM head: forward + activation gradient on the kept
    answer positions only (`logits_to_keep`), 4·hidden·vocab·kept.
    `flops_6nt`: the usual 6·N·T with N all base parameters (embeddings included), as if
    every weight got a gradient: comparable to full fine-tuning figures, not to this work.
    """
    config = student.get_base_model().config
    hidden, vocab, layers = config.hidden_size, config.vocab_size, config.num_hidden_layers
    base = student.get_base_model()
    lora = sum(p.numel() for n, p in student.named_parameters() if "lora_" in n)
    linear = sum(
        p.numel()
        for n, p in base.named_parameters()
        if "lora_" not in n and n.endswith("weight") and any(f".{t}." in n for t in ALL_PROJECTIONS)
    )
    everything = sum(p.numel() for n, p in base.named_parameters() if "lora_" not in n)
    real = (
        4 * linear * tokens
        + 6 * lora * tokens
        + 12 * layers * hidden * sequence * tokens
        + 4 * hidden * vocab * kept_positions
    )
    return {"tflops": real, "tflops_6nt": 6 * everything * tokens}


def mixed_length_rows(student, shape: str, sizes: Sizes, rng: random.Random) -> list[dict]:
    """Student lengths spread from half to full length, `mixed_batches` batches an epoch:
    random batches (the reference) vs length-bucketed batches. The second epoch is timed
    (the engine runs 8): each shape's first-time costs (allocations, graph captures) fall
    in the first."""
    count = sizes.mixed_batches * sizes.distill_batches[0]
    lengths = [rng.randint(sizes.student_tokens // 2, sizes.student_tokens) for _ in range(count)]
    examples = [random_example(sizes, length, student, rng) for length in lengths]
    rows = []
    plans = (
        ("reference, random batches", ReferenceTrainer, random_batches),
        ("optimised, length-bucketed", OptimisedTrainer, length_bucketed_batches),
        ("CUDA-graphed, length-bucketed", GraphedTrainer, length_bucketed_batches),
    )
    for name, trainer_class, plan in plans:
        epochs = [plan(examples, sizes.distill_batches[0], random.Random(seed)) for seed in (1, 2)]
        seconds = train_for(student, trainer_class, epochs[1], warmup=epochs[0])
        free()
        padded = sum(len(g) * max(len(e.student_ids) for e in g) for g in epochs[1])
        row = {
            "shape": shape,
            "step": f"mixed lengths: {name}",
            "batch": sizes.distill_batches[0],
            "seconds_per_step": seconds / len(epochs[1]),
            "real_tokens_per_s": sum(lengths) / seconds,
            "padding_fraction": 1 - sum(lengths) / padded,
        }
        cells = [row["step"], row["batch"], row["seconds_per_step"], row["real_tokens_per_s"]]
        print_row([*cells, *[""] * 4])
        rows.append(row)
    return rows


def random_batches(examples, batch_size: int, rng: random.Random) -> list[list[Example]]:
    shuffled = examples[:]
    rng.shuffle(shuffled)
    return [shuffled[i : i + batch_size] for i in range(0, len(shuffled), batch_size)]


# (c) query -------------------------------------------------------------------------------


def query_rows(model, shape: str, sizes: Sizes, batches: list[int], env: dict) -> list:
    limit = model.config.max_position_embeddings
    room = limit - sizes.question_tokens - sizes.answer_new_tokens
    passages = min(sizes.passages, room // sizes.tokens_per_passage)
    header(
        f"(c) query, {shape}: {sizes.question_tokens}-tok question, "
        f"{sizes.answer_new_tokens} answer tokens, batch 1; context {passages} passages x "
        f"{sizes.tokens_per_passage} tok (max positions {limit})",
        [*("setting", "prompt tok", "fast s", "HF s", "fast 1st call s"), *MEMORY_COLUMNS],
    )
    student = with_lora(model, sizes.lora_rank)
    rows = [query_row(student, shape, "adapter, no context", sizes.question_tokens, sizes)]
    context = sizes.question_tokens + passages * sizes.tokens_per_passage
    with student.disable_adapter():
        label = f"no adapter, {passages} passages in prompt"
        if passages < sizes.passages:
            label += f" (the most that fit, not {sizes.passages})"
        rows.append(query_row(student, shape, label, context, sizes))
    release_graphs(student)
    return rows


def query_row(model, shape: str, setting: str, prompt_tokens: int, sizes: Sizes) -> dict:
    new = sizes.answer_new_tokens
    ids, mask = left_padded_prompts(1, prompt_tokens, model, seed=3)
    release_graphs(model)  # the first call below allocates its cache and captures its graph
    with engine_kernels(model):
        first_s, peak, extra = measure(lambda: engine_answer(model, ids, mask, new))
        fast_s, _, _ = measure(lambda: engine_answer(model, ids, mask, new))
    release_graphs(model)
    _, hf_peak, hf_extra = measure(lambda: hf_generate(model, ids, mask, new))
    hf_s, _, _ = measure(lambda: hf_generate(model, ids, mask, new))
    row = {
        "shape": shape,
        "setting": setting,
        "prompt_tokens": prompt_tokens,
        "fast_seconds": fast_s,
        "hf_seconds": hf_s,
        "fast_first_call_seconds": first_s,
        "fast_peak_gib": peak,
        "fast_above_weights_gib": extra,
        "hf_peak_gib": hf_peak,
        "hf_above_weights_gib": hf_extra,
    }
    print_row([setting, prompt_tokens, fast_s, hf_s, first_s, peak, extra, hf_peak, hf_extra])
    return row


def measure(function: Callable) -> tuple[float, float | None, float | None]:
    """Seconds, peak GPU memory (GiB) during `function`, and the part of that peak above
    what was allocated before (the weights)."""
    if not torch.cuda.is_available():
        return (*timed(function)[:1], None, None)
    synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    seconds, _ = timed(function)
    peak = torch.cuda.max_memory_allocated()
    return seconds, peak / 2**30, (peak - before) / 2**30


# output ------------------------------------------------------------------------------------

_current_columns: list[str] = []


def header(title: str, columns: list[str]) -> None:
    _current_columns[:] = columns
    print(f"\n### {title}\n", flush=True)
    print("| " + " | ".join(columns) + " |", flush=True)
    print("|" + "---|" * len(columns), flush=True)


def print_row(cells: list) -> None:
    print("| " + " | ".join(format_cell(c) for c in cells) + " |", flush=True)


def format_cell(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.0f}"
    return str(value)


def write(report: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "speed.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# Speed — {report['environment']['device']}", ""]
    lines.append("```\n" + json.dumps(report["environment"]) + "\n```")
    for section, rows in report["rows"].items():
        if not rows:
            continue
        lines += ["", f"## {section}", "", markdown_table(rows)]
    (folder / "speed.md").write_text("\n".join(lines) + "\n")
    print(f"\nwrote {folder / 'speed.json'} and {folder / 'speed.md'}", flush=True)


def markdown_table(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    body = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        body.append("| " + " | ".join(format_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(body)


if __name__ == "__main__":
    main()
