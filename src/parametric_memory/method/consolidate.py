"""Stage 3 — consolidation: train the LoRA student (no chunk) towards the teacher's
distribution (chunk in context) with KL on the answer tokens.

The adapter is created once per memory and trained in place, transformation after
transformation: T_i: θ_{i-1} + C_i → θ_i.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer

from ..config import ConsolidationConfig
from ..engine import (
    LoadedModel,
    capturable_adamw,
    clip_and_step,
    collate,
    graphed_trainer,
    set_learning_rate,
    student_kl_loss,
    without_transformers_notices,
)
from ..errors import ModelLoadError, TrainingDivergedError
from ..records import Example, TrainingStats
from ..schedule import training_batches, warmup_then_linear_decay

logger = logging.getLogger(__name__)


def attach_adapter(lm: LoadedModel, config: ConsolidationConfig, seed: int) -> None:
    """Wrap the base model in a fresh LoRA adapter (initialised as a no-op)."""
    torch.manual_seed(seed)
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        task_type="CAUSAL_LM",
    )
    try:
        with without_transformers_notices():
            lm.model = get_peft_model(lm.model, lora)
    except ValueError as error:  # e.g. target modules the model does not have
        raise ModelLoadError(f"cannot attach the LoRA adapter to {lm.name}: {error}") from None
    lm.model.eval()


def reset_adapter(lm: LoadedModel, seed: int) -> None:
    """Re-initialise every LoRA layer (B = 0, so the adapter is a no-op again)."""
    torch.manual_seed(seed)
    for module in lm.model.modules():
        if isinstance(module, LoraLayer):
            for name in module.lora_A:
                module.reset_lora_parameters(name, init_lora_weights=True)


def train_student(
    lm: LoadedModel, examples: list[Example], config: ConsolidationConfig, rng: random.Random
) -> TrainingStats:
    """Epochs of KL distillation over `examples` (teacher targets already computed); each
    step is reported to `lm.progress` as "consolidate"."""
    model = lm.model
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    optimizer, step = _student_step(lm, params, config)
    steps_per_epoch = -(-len(examples) // config.batch_size)
    schedule = warmup_then_linear_decay(config.epochs * steps_per_epoch, config.warmup_ratio)
    losses: list[torch.Tensor] = []
    skipped = torch.zeros((), device=lm.device)
    plan = training_batches(examples, config, rng)
    lm.progress("consolidate", 0, len(plan))
    model.train()
    try:
        for batch in plan:
            set_learning_rate(optimizer, config.learning_rate * schedule(len(losses)))
            loss, skip = step(batch)
            losses.append(loss)
            skipped += skip
            lm.progress("consolidate", len(losses), len(plan))
    finally:
        model.eval()
    if not losses:
        return TrainingStats(0, 0.0, 0.0)
    # One host-device sync at the end instead of one per step.
    values = torch.stack(losses).float().cpu().tolist()
    stats = TrainingStats(len(values), values[0], values[-1], int(skipped.item()))
    _refuse_non_finite_weights(params, before, stats)
    logger.debug(
        "distillation loss %.4f -> %.4f over %d steps (%d skipped: gradient not finite)",
        stats.first_loss,
        stats.last_loss,
        stats.steps,
        stats.skipped_steps,
    )
    return stats


StudentStep = Callable[[list[Example]], tuple[torch.Tensor, torch.Tensor]]
"""One optimiser step on a batch; returns the loss and 1.0 if the step was skipped (device
tensors, no host sync)."""


def _student_step(
    lm: LoadedModel, params: list[torch.nn.Parameter], config: ConsolidationConfig
) -> tuple[torch.optim.Optimizer, StudentStep]:
    """Where the backend graphs training, the model's graphed trainer (graphs kept from
    earlier transformations, optimiser reset to fresh); elsewhere a fresh fused AdamW
    stepping eagerly."""
    if lm.backend.graphed_training:
        trainer = graphed_trainer(lm, params, config)
        return trainer.optimizer, trainer.step
    optimizer = capturable_adamw(params, config.learning_rate, lm.device)

    def eager_step(batch: list[Example]) -> tuple[torch.Tensor, torch.Tensor]:
        optimizer.zero_grad(set_to_none=True)
        loss = backward_in_length_groups(lm, batch)
        return loss, clip_and_step(optimizer, params, config.max_grad_norm)

    return optimizer, eager_step


def _refuse_non_finite_weights(
    params: list[torch.Tensor], before: list[torch.Tensor], stats: TrainingStats
) -> None:
    """Put the weights back as they were and raise if training left any of them NaN/inf,
    so a diverged transformation is never committed."""
    if bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
        return
    with torch.no_grad():
        for param, saved in zip(params, before, strict=True):
            param.copy_(saved)
    raise TrainingDivergedError(
        f"distillation diverged (loss {stats.first_loss:.3g} -> {stats.last_loss:.3g} over "
        f"{stats.steps} steps); the adapter was restored. Lower consolidation.learning_rate"
    )


def backward_in_length_groups(lm: LoadedModel, batch: list[Example]) -> torch.Tensor:
    """Backpropagate the batch's loss group by group of similar length, so padding to the
    longest sequence is not computed for the short ones (the step's cost on a CPU is its
    padded tokens). The gradient is the whole batch's: each group's mean loss is weighted
    by its share of the batch's answer tokens. Returns the batch's loss (detached)."""
    answer_tokens = sum(e.answer_len for e in batch)
    total = torch.zeros((), device=lm.device)
    for group in length_groups(batch):
        share = sum(e.answer_len for e in group) / answer_tokens
        loss = _distillation_loss(lm, group) * share
        loss.backward()
        total += loss.detach()
    return total


_GROUP_OVERHEAD_TOKENS = 32
"""What one more forward and backward costs beyond its tokens, in tokens (2-core CPU)."""


def length_groups(batch: list[Example]) -> list[list[Example]]:
    """The batch sorted by student length and cut where that saves the most computation:
    padded tokens plus a fixed overhead per group, minimised exactly (a batch is small)."""
    ordered = sorted(batch, key=lambda e: len(e.student_ids))
    best = [0] + [float("inf")] * len(ordered)
    start_of = [0] * (len(ordered) + 1)
    for end in range(1, len(ordered) + 1):
        width = len(ordered[end - 1].student_ids)
        for start in range(end):
            cost = best[start] + (end - start) * width + _GROUP_OVERHEAD_TOKENS
            if cost < best[end]:
                best[end], start_of[end] = cost, start
    groups, end = [], len(ordered)
    while end > 0:
        groups.append(ordered[start_of[end] : end])
        end = start_of[end]
    return groups[::-1]


def _distillation_loss(lm: LoadedModel, batch: list[Example]) -> torch.Tensor:
    return student_kl_loss(lm.model, collate(batch, lm.tokenizer.pad_token_id, lm.device))
