"""Liger kernels or not: decode speed, and one group of 128 squad-dev passages (elicit,
teacher, gaps, 12 slot steps). argv: data variant (base|normmlp|all)."""

import json
import os
import random
import sys
import time

import torch
from common import load_documents
from quality import sample_documents
from torch.nn.attention import SDPBackend, sdpa_kernel

from parametric_memory import MemoryConfig
from parametric_memory.engine.adapter_slots import AdapterSlots
from parametric_memory.engine.fast_generation import greedy_generate, release_graphs
from parametric_memory.engine.generation import adapter_disabled
from parametric_memory.engine.models import load_model
from parametric_memory.engine.slot_training import SlotAdamW, _step_losses
from parametric_memory.method.chunking import chunk_document
from parametric_memory.method.consolidate import attach_adapter
from parametric_memory.method.distillation import (
    compute_teacher_targets,
    student_nll,
    tokenize_items,
)
from parametric_memory.method.elicit import elicit_transfer_set
from parametric_memory.schedule import training_batches


def sync():
    torch.cuda.synchronize()


T = {}


class Timed:
    def __init__(self, name):
        self.name = name

    def __enter__(self):
        sync()
        self.t = time.perf_counter()

    def __exit__(self, *_):
        sync()
        T[self.name] = time.perf_counter() - self.t
        print(f"{self.name}: {T[self.name]:.3f}s", flush=True)


def patch(model, variant):
    if variant == "base":
        return
    from types import MethodType

    from liger_kernel.transformers.functional import liger_rms_norm, liger_rope, liger_swiglu

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for m in base.modules():
        n = type(m).__name__
        if n.endswith("RMSNorm"):
            m.forward = MethodType(
                lambda self, x: liger_rms_norm(x, self.weight, self.variance_epsilon), m
            )
        elif n.endswith("MLP"):
            m.forward = MethodType(
                lambda self, x: self.down_proj(liger_swiglu(self.gate_proj(x), self.up_proj(x))), m
            )
    if variant == "all":
        from transformers.models.llama import modeling_llama

        modeling_llama.apply_rotary_pos_emb = lambda q, k, cos, sin, unsqueeze_dim=1: liger_rope(
            q, k, cos, sin, None, unsqueeze_dim
        )


def decode_bench(lm):
    g = torch.Generator().manual_seed(0)
    for batch in (1, 32, 128):
        ids = torch.randint(1, 49000, (batch, 300), generator=g).cuda()
        mask = torch.ones_like(ids)
        with adapter_disabled(lm.model):
            greedy_generate(lm.model, ids, mask, 64, eos_token_id=None, pad_token_id=0)
            with Timed(f"decode b{batch} 64 tok"):
                out = greedy_generate(lm.model, ids, mask, 64, eos_token_id=None, pad_token_id=0)
        release_graphs(lm.model)
        T[f"decode_tokens_b{batch}"] = out[:, 300:].tolist()[:4]


def main():
    data, variant = sys.argv[1], sys.argv[2]
    config = MemoryConfig()
    lm = load_model(config)
    attach_adapter(lm, config.consolidation, 0)
    patch(lm.model, variant)
    lm.model.eval()
    decode_bench(lm)
    tok = lm.tokenizer

    def count(text):
        return len(tok(text, add_special_tokens=False)["input_ids"])

    docs = sample_documents(load_documents(data), 128, 0, 0)
    chunks = [c for d in docs for c in chunk_document(d["id"], d["id"], d["text"], 256, count)]
    el = config.elicitation.model_copy(update={"generation_batch_size": 1024})
    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    with sdpa_kernel(backends):
        with Timed("elicit"):
            items = elicit_transfer_set(lm, chunks, el)
        T["items"] = len(items)
        T["answers"] = [i.answer for i in items[:200]]
        ex = tokenize_items(lm, items, {c.id: c for c in chunks})
        with Timed("teacher"):
            compute_teacher_targets(lm, ex, 64, 256)
        with adapter_disabled(lm.model), Timed("student_nll"):
            nll = student_nll(lm, ex, 256)
        T["nll"] = nll[:50]
        steps(lm, config, ex)
    T["peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
    with open(os.path.join(os.environ["OUT"], f"{variant}.json"), "w") as out:
        json.dump(T, out)


def steps(lm, config, ex):
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
    losses = []
    with slots.attached():
        lm.model.train()

        def step(s):
            rows = [plan[s] if s < len(plan) else [] for plan in plans]
            loss = _step_losses(lm, slots, rows)
            opt.step(rate, active, 1.0)
            return loss

        step(0)
        with Timed("steps 1-12"):
            for s in range(1, 13):
                losses.append(step(s).sum().item())
        lm.model.eval()
    T["losses"] = losses


if __name__ == "__main__":
    main()
