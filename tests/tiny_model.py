"""A tiny random-weight Llama with a real (in-process trained) BPE tokenizer and a chat
template, saved as a normal model folder: the whole pipeline runs on it in seconds."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from parametric_memory import MemoryConfig

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CORPUS = [
    "The quick brown fox jumps over the lazy dog. Read this text and answer questions.",
    "What do you know about Brindlewick? Fill in the blank: Complete the sentence: Tell me.",
    "New hires get 27 vacation days. The festival is held in Quillhaven every May 14.",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\"()-_/",
]


# Two small documents and a third fact, shared by the reliability tests on the tiny model.
FACTS = {
    "quillhaven.md": "The Quillhaven lantern festival is held every May 14. "
    "Mira Tallow lit the first lantern in 1911.",
    "brindlewick.md": "New hires at Brindlewick Analytics get 27 vacation days. "
    "Payroll is run by Odo Brask from the Orsk Hollow office.",
}
NEW_FACT = "The Tarrow Bridge spans 412 metres over the Kessel River. It opened in 1934."


def tiny_memory_config(model_dir: Path) -> MemoryConfig:
    """A memory config small enough for unit tests on the tiny model (seconds a document)."""
    return MemoryConfig(
        model=str(model_dir),
        elicitation={"max_answer_tokens": 8, "items_per_chunk": 8},
        consolidation={"epochs": 1, "lora_rank": 4},
    )


def build_tiny_model(folder: Path, seed: int = 0) -> Path:
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(_CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False,  # tied random weights make greedy decoding emit only "\n"
    )
    model = LlamaForCausalLM(config)
    model.generation_config.max_length = None
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def build_talking_tiny_model(folder: Path, seed: int = 3) -> Path:
    """The tiny model with a random output layer of larger scale, so that greedy decoding
    writes varied non-empty text (frameworks' standard tests want non-empty answers)."""
    build_tiny_model(folder, seed=seed)
    model = LlamaForCausalLM.from_pretrained(folder)
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(model.lm_head.weight.shape, generator=generator) * 0.5
    model.lm_head.weight = torch.nn.Parameter(weight)
    model.save_pretrained(folder)
    return folder
