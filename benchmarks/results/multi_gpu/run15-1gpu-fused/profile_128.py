"""(1) eager decode-step kernel profile at batch 128; (2) cProfile of elicitation of 128
passages; (3) slot steps 1-12 under several pass budgets."""

import cProfile
import io
import pstats
import random
import sys
import time

import torch
from common import load_documents
from quality import sample_documents
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

from parametric_memory import MemoryConfig
from parametric_memory.engine import slot_training
from parametric_memory.engine.adapter_slots import AdapterSlots
from parametric_memory.engine.fast_generation import greedy_generate
from parametric_memory.engine.generation import adapter_disabled
from parametric_memory.engine.models import load_model
from parametric_memory.engine.slot_training import SlotAdamW, _step_losses
from parametric_memory.method.chunking import chunk_document
from parametric_memory.method.consolidate import attach_adapter
from parametric_memory.method.distillation import compute_teacher_targets, tokenize_items
from parametric_memory.method.elicit import elicit_transfer_set
from parametric_memory.schedule import training_batches


def sync():
    torch.cuda.synchronize()


def table(p, n=25):
    print(
        p.key_averages().table(
            sort_by="self_cuda_time_total", row_limit=n, max_name_column_width=60
        ),
        flush=True,
    )


def main():
    data = sys.argv[1]
    config = MemoryConfig()
    lm = load_model(config)
    attach_adapter(lm, config.consolidation, 0)
    lm.model.eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 49000, (128, 300), generator=g).cuda()
    mask = torch.ones_like(ids)
    with adapter_disabled(lm.model):
        greedy_generate(
            lm.model, ids, mask, 16, eos_token_id=None, pad_token_id=0, static_shapes=False
        )
        sync()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
            greedy_generate(
                lm.model, ids, mask, 16, eos_token_id=None, pad_token_id=0, static_shapes=False
            )
            sync()
    print("== eager decode b128, 300 prompt, 16 tokens")
    table(p)
    tok = lm.tokenizer

    def count(text):
        return len(tok(text, add_special_tokens=False)["input_ids"])

    docs = sample_documents(load_documents(data), 128, 0, 0)
    chunks = [c for d in docs for c in chunk_document(d["id"], d["id"], d["text"], 256, count)]
    el = config.elicitation.model_copy(update={"generation_batch_size": 1024})
    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    with sdpa_kernel(backends):
        prof = cProfile.Profile()
        t = time.perf_counter()
        prof.enable()
        items = elicit_transfer_set(lm, chunks, el)
        sync()
        prof.disable()
        print(f"== elicit {time.perf_counter() - t:.2f}s items {len(items)}")
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(35)
        print(s.getvalue()[:7000])
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(20)
        print(s.getvalue()[:5000])
        ex = tokenize_items(lm, items, {c.id: c for c in chunks})
        compute_teacher_targets(lm, ex, 64, 256)
        for tokens, rows in ((32768, 256), (65536, 512), (131072, 1024)):
            slot_training._PASS_TOKENS, slot_training._PASS_ROWS = tokens, rows
            torch.cuda.reset_peak_memory_stats()
            steps(lm, config, ex, f"pass tokens {tokens} rows {rows}")
            print("  peak GB", torch.cuda.max_memory_allocated() / 1e9, flush=True)


def steps(lm, config, ex, label):
    byd = {}
    for e in ex:
        byd.setdefault(e.item.chunk_id.rsplit("-", 1)[0], []).append(e)
    groups = list(byd.values())
    plans = [
        training_batches(g, config.consolidation, random.Random(i)) for i, g in enumerate(groups)
    ]
    slots = AdapterSlots(lm, len(groups))
    opt = SlotAdamW(slots.weights)
    K = len(groups)
    rate = torch.full((K,), 1e-3, device="cuda")
    active = torch.ones(K, dtype=torch.bool, device="cuda")
    with slots.attached():
        lm.model.train()

        def step(s):
            rows = [plan[s] if s < len(plan) else [] for plan in plans]
            loss = _step_losses(lm, slots, rows)
            opt.step(rate, active, 1.0)
            return loss

        step(0)
        sync()
        t = time.perf_counter()
        for s in range(1, 13):
            step(s)
        sync()
        dt = time.perf_counter() - t
        rows = [(k, e) for k, plan in enumerate(plans) for e in plan[5]]
        print(
            f"{label}: steps 1-12 {dt:.2f}s; step 5 has {len(rows)} rows in "
            f"{len(slot_training._passes(rows, 49152))} passes",
            flush=True,
        )
        if label.endswith("256"):
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
                step(13)
                sync()
            print("== one step profile")
            table(p, 20)
        lm.model.eval()
    torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
