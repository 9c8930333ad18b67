"""Consolidation of several fresh adapters at once: each slot of `AdapterSlots` is trained on
its own document's examples exactly as `consolidate.train_student` would train it alone —
the same batches (`consolidate.training_batches`, from the document's own random
generator), learning-rate schedule, gradient clipping and AdamW — but at each step the rows
of every slot's batch go through the model together, longest first, in passes of similar
length. A slot with fewer steps than the others sits out the rest (no rows, no update)."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

import torch
from torch.utils.checkpoint import checkpoint

from ..config import ConsolidationConfig
from ..errors import TrainingDivergedError
from ..losses import topk_kl_per_token
from ..records import Example, TrainingStats
from ..schedule import training_batches, warmup_then_linear_decay
from .adapter_slots import AdapterSlots
from .fast_distillation import answer_position_logits, collate
from .host_copies import to_device
from .models import LoadedModel

logger = logging.getLogger(__name__)


def train_slots(
    lm: LoadedModel,
    slots: AdapterSlots,
    examples: Sequence[list[Example]],
    config: ConsolidationConfig,
    rngs: Sequence[random.Random],
) -> list[TrainingStats]:
    """Epochs of KL distillation, slot k on `examples[k]` shuffled by `rngs[k]`; each step
    (of all slots at once) is reported to `lm.progress` as "consolidate"."""
    if not len(examples) == len(rngs) == slots.slots:
        raise ValueError(f"{slots.slots} slots need as many example lists and generators")
    plans = [training_batches(ex, config, rng) for ex, rng in zip(examples, rngs, strict=True)]
    with slots.attached():
        lm.model.train()
        try:
            losses, skips = _train_steps(lm, slots, plans, config)
        finally:
            lm.model.eval()
    stats = _stats(plans, losses, skips)
    _refuse_non_finite_slots(slots, stats)
    return stats


def _train_steps(
    lm: LoadedModel,
    slots: AdapterSlots,
    plans: list[list[list[Example]]],
    config: ConsolidationConfig,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Every step of every slot's plan; each step's [slots] losses and skips, on the device.
    Nothing here waits for the GPU, so the host queues the next pass while it computes."""
    schedules = [warmup_then_linear_decay(len(plan), config.warmup_ratio) for plan in plans]
    optimizer = SlotAdamW(slots.weights)
    device = slots.weights.device
    losses, skips = [], []
    steps = max(len(plan) for plan in plans)
    lm.progress("consolidate", 0, steps)
    for step in range(steps):
        batches = [plan[step] if step < len(plan) else [] for plan in plans]
        rates = [
            config.learning_rate * schedule(step) if step < len(plan) else 0.0
            for plan, schedule in zip(plans, schedules, strict=True)
        ]
        loss = _step_losses(lm, slots, batches)
        active = to_device(torch.tensor([bool(batch) for batch in batches]), device)
        rate = to_device(torch.tensor(rates, dtype=torch.float32), device)
        skips.append(optimizer.step(rate, active, config.max_grad_norm))
        losses.append(loss.detach())
        lm.progress("consolidate", step + 1, steps)
    return losses, skips


_PASS_TOKENS = 32_768
"""Most padded tokens in one forward and backward pass: a step's rows, longest first, are cut
into passes under this budget (and `_PASS_ROWS`, `_PASS_LOGITS`), which bounds activation
memory however many documents a group holds: a wide group's rows in one pass would need
many times what a pass under this budget does (measured: see benchmarks/RESULTS.md)."""
_PASS_LOGITS = 4_000_000_000
"""Most answer logits (rows x answer positions x vocabulary) in one pass: 8 GB in bfloat16."""
_PASS_ROWS = 256
"""Most rows in one pass: each row gathers its own copy of its slot's adapter (9.8 MB in
bfloat16 for the default model), kept for backward."""
_KL_LOGITS = 1 << 27
"""Most logits whose float32 log-softmax is computed at a time (512 MB); recomputed in
backward, so only the model's logits are kept."""


def _step_losses(
    lm: LoadedModel, slots: AdapterSlots, batches: list[list[Example]]
) -> torch.Tensor:
    """[slots] mean KL per answer token of each slot's batch (0 for an empty one); the
    gradient is accumulated into `slots.weights.grad`, one pass of rows at a time."""
    device = slots.weights.device
    rows = [(slot, example) for slot, batch in enumerate(batches) for example in batch]
    if not rows:
        raise ValueError("a step needs at least one example")
    answer_tokens = [max(1, sum(e.answer_len for e in batch)) for batch in batches]
    denominators = to_device(torch.tensor(answer_tokens, dtype=torch.float32), device)
    vocabulary = lm.model.get_output_embeddings().weight.shape[0]
    losses = torch.zeros(len(batches), device=device)
    for rows_of_pass in _passes(rows, vocabulary):
        slot_list = [slot for slot, _ in rows_of_pass]
        slot_of_row = to_device(torch.tensor(slot_list), device)
        only_slot = slot_list[0] if len(set(slot_list)) == 1 else None
        examples = [example for _, example in rows_of_pass]
        kl = _row_kl_sums(lm, slots, examples, slot_of_row, only_slot)
        loss = kl / denominators[slot_of_row]
        loss.sum().backward()
        losses.index_add_(0, slot_of_row, loss.detach())
    return losses


def _passes(rows: list[tuple[int, Example]], vocabulary: int) -> list[list[tuple[int, Example]]]:
    """The rows, longest first, cut into passes that fit the budgets of one pass."""
    ordered = sorted(rows, key=lambda row: len(row[1].student_ids), reverse=True)
    passes, current, width, answer = [], [], 0, 0
    for row in ordered:
        length, answer_len = len(row[1].student_ids), row[1].answer_len
        count = len(current) + 1
        width, answer = max(width, length), max(answer, answer_len)
        too_big = (
            count > _PASS_ROWS
            or count * width > _PASS_TOKENS
            or count * answer * vocabulary > _PASS_LOGITS
        )
        if too_big and current:
            passes.append(current)
            current, width, answer = [], length, answer_len
        current.append(row)
    passes.append(current)
    return passes


def _row_kl_sums(
    lm: LoadedModel,
    slots: AdapterSlots,
    examples: list[Example],
    slot_of_row: torch.Tensor,
    only_slot: int | None,
) -> torch.Tensor:
    """[rows] KL summed over each row's answer tokens, row i computed with its slot
    (`only_slot`: all of them with that one)."""
    batch = collate(examples, lm.tokenizer.pad_token_id, slots.weights.device)
    slots.use_rows(slot_of_row, only_slot)
    logits = answer_position_logits(lm.model, batch)
    per_token = _kl_in_pieces(logits, batch.topk_ids, batch.topk_logprobs)
    return (per_token * batch.answer_mask).sum(dim=1)


def _kl_in_pieces(
    logits: torch.Tensor, topk_ids: torch.Tensor, topk_logprobs: torch.Tensor
) -> torch.Tensor:
    rows = max(1, _KL_LOGITS // (logits.shape[1] * logits.shape[2]))
    pieces = [
        checkpoint(
            topk_kl_per_token,
            logits[start : start + rows],
            topk_ids[start : start + rows],
            topk_logprobs[start : start + rows],
            use_reentrant=False,
        )
        for start in range(0, logits.shape[0], rows)
    ]
    return torch.cat(pieces)


class SlotAdamW:
    """AdamW (no weight decay, torch's betas and eps) over a [slots, n] tensor, each slot
    with its own learning rate and step count. Gradients are clipped per slot, and a slot
    that is idle this step or whose gradient is not finite is left exactly as it was, as
    fused AdamW leaves its weights when it finds an inf."""

    def __init__(self, weights: torch.Tensor, betas=(0.9, 0.999), eps: float = 1e-8):
        self.weights, self.betas, self.eps = weights, betas, eps
        self.exp_avg = torch.zeros_like(weights, dtype=torch.float32)
        self.exp_avg_sq = torch.zeros_like(weights, dtype=torch.float32)
        self.steps = torch.zeros(weights.shape[0], dtype=torch.float32, device=weights.device)

    @torch.no_grad()
    def step(self, rate: torch.Tensor, active: torch.Tensor, max_grad_norm: float) -> torch.Tensor:
        """Update every active slot with its `rate`; returns [slots] 1.0 where an active
        slot's step was skipped (gradient not finite). No host sync."""
        grad = self.weights.grad
        norm = grad.float().norm(dim=1)
        finite = torch.isfinite(norm)
        moving = (finite & active).float()
        clip = (max_grad_norm / (norm + 1e-6)).clamp(max=1.0) * moving
        grad = torch.where(moving[:, None] > 0, grad * clip[:, None], 0.0)
        beta1, beta2 = self.betas
        self.steps += moving
        steps = self.steps.clamp(min=1.0)
        self.exp_avg.lerp_(grad, ((1 - beta1) * moving)[:, None])
        self.exp_avg_sq.lerp_(grad * grad, ((1 - beta2) * moving)[:, None])
        step_size = rate * moving / (1 - beta1**steps)
        denom = (self.exp_avg_sq.sqrt() / (1 - beta2**steps).sqrt()[:, None]).add_(self.eps)
        self.weights.addcdiv_(self.exp_avg * step_size[:, None], denom, value=-1.0)
        self.weights.grad = None
        return (active & ~finite).float()


def _stats(
    plans: list[list[list[Example]]], losses: list[torch.Tensor], skips: list[torch.Tensor]
) -> list[TrainingStats]:
    if not losses:
        return [TrainingStats(0, 0.0, 0.0) for _ in plans]
    # One host-device sync at the end instead of one per step.
    loss_table = torch.stack(losses).cpu().tolist()  # [steps][slots]
    skipped = torch.stack(skips).sum(dim=0).cpu().tolist()
    stats = []
    for slot, plan in enumerate(plans):
        if not plan:
            stats.append(TrainingStats(0, 0.0, 0.0))
            continue
        first, last = loss_table[0][slot], loss_table[len(plan) - 1][slot]
        stats.append(TrainingStats(len(plan), first, last, int(skipped[slot])))
    return stats


def _refuse_non_finite_slots(slots: AdapterSlots, stats: list[TrainingStats]) -> None:
    """A slot whose weights training left NaN/inf is never committed: stop the whole group."""
    finite = slots.finite().cpu().tolist()
    if all(finite):
        return
    bad = [slot for slot, ok in enumerate(finite) if not ok]
    worst = stats[bad[0]]
    raise TrainingDivergedError(
        f"distillation diverged in {len(bad)} of {slots.slots} documents trained together "
        f"(loss {worst.first_loss:.3g} -> {worst.last_loss:.3g}); nothing of them was "
        "committed. Lower consolidation.learning_rate"
    )
