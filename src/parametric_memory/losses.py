"""The distillation objective as pure tensor functions (as TRL's `generalized_jsd_loss`):
no model, no optimiser. The method's reference trainer and the engine's fast trainers
compute the same loss from these, so every fast path is tested against one definition."""

from __future__ import annotations

import torch

_EPS = 1e-8


def topk_kl_loss(
    student_logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """KL(teacher ‖ student) per answer token, averaged over unmasked tokens."""
    per_token = topk_kl_per_token(student_logits, topk_ids, topk_logprobs) * mask
    return per_token.sum() / mask.sum().clamp(min=1)


def topk_kl_per_token(
    student_logits: torch.Tensor, topk_ids: torch.Tensor, topk_logprobs: torch.Tensor
) -> torch.Tensor:
    """KL(teacher ‖ student) at each position.

    The teacher is known on its top-k tokens plus one "tail" bucket holding the rest of its
    mass; the student's distribution is folded into the same k+1 buckets. With k equal to the
    vocabulary this is the exact KL.
    """
    # dtype= reads the (bfloat16) logits into a float32 softmax in one kernel, and its backward
    # writes the logits' gradient in their dtype: no float32 copy of every logit each way.
    student_logprobs = torch.log_softmax(student_logits, dim=-1, dtype=torch.float32)
    student_top = student_logprobs.gather(-1, topk_ids)
    teacher_top = topk_logprobs.float()
    teacher_p = teacher_top.exp()
    teacher_tail = (1.0 - teacher_p.sum(-1)).clamp(min=0.0)
    student_tail = (1.0 - student_top.exp().sum(-1)).clamp(min=_EPS)
    kl_top = (teacher_p * (teacher_top - student_top)).sum(-1)
    kl_tail = teacher_tail * (teacher_tail.clamp(min=_EPS).log() - student_tail.log())
    return kl_top + kl_tail
