"""How the method runs: model loading, generation, teacher and student passes, the fused and
graphed fast paths, stacked adapter slots. A `Backend` (`backend.py`) is chosen once, when
the model loads; method code reaches the engine through the names below, never its modules.
"""

from .adapter_slots import AdapterSlots
from .answer_indexing import answer_mask, answer_positions, logits_at, right_padded
from .backend import Backend, choose_backend
from .fast_distillation import collate, graphed_trainer, student_kl_loss
from .generation import (
    adapter_disabled,
    chat_parts,
    encode_markup,
    encode_prompts,
    encode_texts,
    generate,
)
from .host_copies import to_device
from .models import LoadedModel, cache_keyword, returned_cache, without_transformers_notices
from .optimizer import capturable_adamw, clip_and_step, set_learning_rate
from .slot_training import train_slots

__all__ = [
    "AdapterSlots",
    "Backend",
    "LoadedModel",
    "adapter_disabled",
    "answer_mask",
    "answer_positions",
    "cache_keyword",
    "capturable_adamw",
    "chat_parts",
    "choose_backend",
    "clip_and_step",
    "collate",
    "encode_markup",
    "encode_prompts",
    "encode_texts",
    "generate",
    "graphed_trainer",
    "logits_at",
    "returned_cache",
    "right_padded",
    "set_learning_rate",
    "student_kl_loss",
    "to_device",
    "train_slots",
    "without_transformers_notices",
]
