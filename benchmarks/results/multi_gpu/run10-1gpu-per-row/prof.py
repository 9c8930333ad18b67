"""Profile one group of 32 squad-dev passages: stages, then slot steps with torch.profiler."""
import random, statistics, sys, time
import torch
from common import load_documents
from quality import sample_documents
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile
from parametric_memory import MemoryConfig, slot_training
from parametric_memory.adapter_slots import AdapterSlots
from parametric_memory.chunking import chunk_document
from parametric_memory.consolidate import attach_adapter, training_batches
from parametric_memory.distillation import compute_teacher_targets, student_nll, tokenize_items
from parametric_memory.elicit import elicit_transfer_set
from parametric_memory.models import load_model
from parametric_memory.slot_training import SlotAdamW, _step_losses
from parametric_memory.generation import adapter_disabled
from parametric_memory.fast_distillation import collate

def sync(): torch.cuda.synchronize()
class Timed:
    def __init__(self, name): self.name = name
    def __enter__(self): sync(); self.t = time.perf_counter()
    def __exit__(self, *_): sync(); self.dt = time.perf_counter() - self.t; print(f"{self.name}: {self.dt:.3f}s", flush=True)

def table(p, key, n):
    try: print(p.key_averages().table(sort_by=key, row_limit=n, max_name_column_width=70), flush=True)
    except Exception as e: print("table fail", key, e)

def main():
    config = MemoryConfig()
    lm = load_model(config)
    print(torch.__version__, lm.model.dtype, lm.model.config._attn_implementation)
    attach_adapter(lm, config.consolidation, 0)
    tok = lm.tokenizer
    count = lambda t: len(tok(t, add_special_tokens=False)["input_ids"])
    docs = sample_documents(load_documents(sys.argv[1]), 32, 0, 0)
    chunks = [c for d in docs for c in chunk_document(d["id"], d["id"], d["text"], 256, count)]
    el = config.elicitation.model_copy(update={"generation_batch_size": 512})
    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    with sdpa_kernel(backends):
        with Timed("elicit"): items = elicit_transfer_set(lm, chunks, el)
        with Timed("tokenize"): ex = tokenize_items(lm, items, {c.id: c for c in chunks})
        with Timed("teacher"): compute_teacher_targets(lm, ex, 64, 64)
        with adapter_disabled(lm.model):
            with Timed("student_nll"): student_nll(lm, ex, 64)
        steps(lm, config, ex)

def steps(lm, config, ex):
    byd = {}
    for e in ex: byd.setdefault(e.item.chunk_id.rsplit("-", 1)[0], []).append(e)
    groups = list(byd.values())
    print("docs", len(groups), "items", len(ex), "mean student len", statistics.mean(len(e.student_ids) for e in ex),
          "max", max(len(e.student_ids) for e in ex), "mean answer", statistics.mean(e.answer_len for e in ex))
    plans = [training_batches(g, config.consolidation, random.Random(i)) for i, g in enumerate(groups)]
    print("steps per slot", [len(p) for p in plans])
    slots = AdapterSlots(lm, len(groups))
    opt = SlotAdamW(slots.weights)
    K = len(groups)
    rate = torch.full((K,), 1e-3, device="cuda"); active = torch.ones(K, dtype=torch.bool, device="cuda")
    with slots.attached():
        lm.model.train()
        def step(s):
            rows = [plan[s] if s < len(plan) else [] for plan in plans]
            _step_losses(lm, slots, rows); opt.step(rate, active, 1.0)
        step(0)
        for s in range(1, 5):
            rows = [(k, e) for k, plan in enumerate(plans) for e in plan[s]]
            with Timed(f"step {s} passes {len(slot_training._passes(rows, 49152))} rows {len(rows)} real tokens {sum(len(e.student_ids) for _, e in rows)}"): step(s)
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
            step(5); step(6); sync()
        wall = time.perf_counter() - t0
        print(f"profiled 2 steps wall {wall:.3f}s", flush=True)
        table(p, "self_cuda_time_total", 22)
        with Timed("all remaining steps"):
            for s in range(7, max(len(p) for p in plans)): step(s)
        lm.model.eval()
    print("peak GB", torch.cuda.max_memory_allocated() / 1e9, flush=True)

if __name__ == "__main__":
    main()
