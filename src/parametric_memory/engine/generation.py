"""Chat formatting and batched greedy generation (left padding, KV cache), plus streaming.

Teacher, student and answering all go through `chat_prompt`, so the student is trained on
exactly the layout it is later asked in. On CUDA, batches are decoded by
`fast_generation.greedy_generate` (static KV cache, CUDA-graphed decode step), which gives
the tokens `model.generate` gives; elsewhere, and for models it does not cover,
`model.generate` itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from queue import Empty
from threading import Event, Thread
from typing import NamedTuple

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from ..errors import GenerationTimeoutError
from .fast_generation import batch_bucket, greedy_generate, supports_fast_decode
from .models import LoadedModel
from .row_adapters import RowChoices

_PLAIN_TEMPLATE = "Question: {user}\nAnswer:"
_USER_SLOT = "\u2063USER-TURN\u2063"


def chat_prompt(tokenizer, user: str) -> str:
    """The text up to where the assistant's answer starts."""
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], add_generation_prompt=True, tokenize=False
        )
    return _PLAIN_TEMPLATE.format(user=user)


def encode_prompt(tokenizer, user: str) -> list[int]:
    """Token ids of `chat_prompt(tokenizer, user)`, with `user` encoded as plain text."""
    return encode_prompts(tokenizer, [user])[0]


def encode_prompts(tokenizer, users: Sequence[str]) -> list[list[int]]:
    """`encode_prompt` of each of `users`, the texts encoded in one batched tokenizer call."""
    before, after = chat_parts(tokenizer)
    head, tail = encode_markup(tokenizer, before), encode_markup(tokenizer, after)
    return [head + body + tail for body in encode_texts(tokenizer, users)]


def chat_parts(tokenizer) -> tuple[str, str]:
    """The chat layout's text before and after the user's turn."""
    before, after = chat_prompt(tokenizer, _USER_SLOT).split(_USER_SLOT)
    return before, after


def encode_texts(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each of `texts` as plain text, in one batched tokenizer call."""
    if not texts:
        return []
    # A document or question that contains "<|im_end|><|im_start|>assistant" must stay text:
    # encoded as special tokens it would end the user's turn and rewrite the prompt.
    encoded = tokenizer(list(texts), add_special_tokens=False, split_special_tokens=True)
    return encoded["input_ids"]


def encode_markup(tokenizer, text: str) -> list[int]:
    # The chat template's own text carries the special tokens it needs.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@contextlib.contextmanager
def adapter_disabled(model):
    """The teacher is the base model: the student's adapter switched off, if it has one."""
    disable = getattr(model, "disable_adapter", None)
    if disable is None:
        yield
    else:
        with disable():
            yield


def generate(
    lm: LoadedModel,
    users: Sequence[str],
    max_new_tokens: int,
    batch_size: int,
    compile_decode: bool = False,
    adapters: RowChoices | None = None,
) -> list[str]:
    """Greedy answers to `users` (user-turn texts), in order, batched by similar length.
    `compile_decode`: the fast decoder's step through `torch.compile` (CUDA). `adapters`:
    each user's own weighted sum of saved adapters (`row_adapters`) instead of the model's
    adapter."""
    _check_rows(users, adapters)
    if adapters is not None:
        batch_size = min(batch_size, adapters.rows_at_once)
    encoded = encode_prompts(lm.tokenizer, users)
    answers = [""] * len(encoded)
    for batch in length_batches(encoded, batch_size):
        prompts = [encoded[i] for i in batch]
        with _rows_attached(lm, adapters, batch):
            texts = _generate_batch(lm, prompts, max_new_tokens, compile_decode)
        for index, text in zip(batch, texts, strict=True):
            answers[index] = text
    return answers


def generate_scored(
    lm: LoadedModel,
    users: Sequence[str],
    max_new_tokens: int,
    batch_size: int,
    adapters: RowChoices,
) -> list[Scored]:
    """Greedy answers to `users`, each with its own adapters (as `generate`), and the model's
    confidence in each: the mean log-probability of the answer's tokens (up to and with its
    end-of-answer token) under the weights that wrote it, and under the base model (no
    adapter): what the weights added to it."""
    _check_rows(users, adapters)
    batch_size = min(batch_size, adapters.rows_at_once)
    encoded = encode_prompts(lm.tokenizer, users)
    scored: list[Scored] = [Scored("", 0.0, 0.0)] * len(encoded)
    eos = lm.tokenizer.eos_token_id
    for batch in length_batches(encoded, batch_size):
        input_ids, attention = left_padded(lm, [encoded[i] for i in batch])
        with _rows_attached(lm, adapters, batch):
            tokens, chosen = _greedy(lm, input_ids, attention, max_new_tokens, scored=True)
        assert chosen is not None
        base = base_log_probabilities(lm, input_ids, attention, tokens)
        texts = lm.tokenizer.batch_decode(tokens, skip_special_tokens=True)
        for row, index in enumerate(batch):
            confidence = answer_confidence(chosen[row], tokens[row], eos)
            base_confidence = answer_confidence(base[row], tokens[row], eos)
            scored[index] = Scored(texts[row], confidence, base_confidence)
    return scored


class Scored(NamedTuple):
    """A greedy answer and the mean log-probability of its tokens (`answer_confidence`)."""

    text: str
    confidence: float
    """Under the weights that wrote it."""
    base_confidence: float
    """Under the base model."""


@torch.inference_mode()
def base_log_probabilities(
    lm: LoadedModel, input_ids: torch.Tensor, attention: torch.Tensor, tokens: torch.Tensor
) -> torch.Tensor:
    """The log-probability of each of `tokens` (the answers to left-padded prompts) under
    the base model, [rows, steps], from one forward pass over prompts and answers."""
    steps = tokens.shape[1]
    ids = torch.cat([input_ids, tokens], dim=1)
    mask = torch.cat([attention, torch.ones_like(tokens)], dim=1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with adapter_disabled(lm.model):
        logits = lm.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=steps + 1
        ).logits[:, :steps]
    return logits.float().log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def _check_rows(users: Sequence[str], adapters: RowChoices | None) -> None:
    if adapters is not None and len(adapters.rows) != len(users):
        raise ValueError(f"{len(users)} users need as many adapter lists, got {len(adapters.rows)}")


def _rows_attached(lm: LoadedModel, adapters: RowChoices | None, batch: list[int]):
    """The rows' own adapters for `batch` (room for the rows the fast decoder pads it to)."""
    if adapters is None:
        return contextlib.nullcontext()
    capacity = batch_bucket(len(batch)) if _use_fast_decode(lm) else len(batch)
    return adapters.attached(batch, capacity)


def length_batches(encoded: list[list[int]], batch_size: int) -> Iterator[list[int]]:
    """Indices of `encoded` in batches of `batch_size`, prompts of similar length together."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def left_padded(lm: LoadedModel, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    pad = lm.tokenizer.pad_token_id
    width = max(len(p) for p in prompts)
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=lm.device)
    attention = torch.tensor(
        [[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=lm.device
    )
    return input_ids, attention


def _greedy(
    lm: LoadedModel,
    input_ids: torch.Tensor,
    attention: torch.Tensor,
    max_new_tokens: int,
    compile_decode: bool = False,
    scored: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The greedy continuations [rows, steps] and, if `scored`, each token's log-probability
    (the fast decoder where it applies, else `model.generate`)."""
    pad, eos, width = lm.tokenizer.pad_token_id, lm.tokenizer.eos_token_id, input_ids.shape[1]
    if _use_fast_decode(lm):
        result = greedy_generate(
            lm.model,
            input_ids,
            attention,
            max_new_tokens,
            eos_token_id=eos,
            pad_token_id=pad,
            compile_step=compile_decode,
            with_scores=scored,
        )
        output, scores = result if scored else (result, None)
        return output[:, width:], scores
    output = lm.model.generate(
        input_ids=input_ids,
        attention_mask=attention,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=pad,
        eos_token_id=eos,
        output_logits=scored,
        return_dict_in_generate=True,
    )
    tokens = output.sequences[:, width:]
    if not scored:
        return tokens, None
    logits = torch.stack(output.logits, dim=1).float()  # [rows, steps, vocab]
    return tokens, logits.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def answer_confidence(logprobs: torch.Tensor, tokens: torch.Tensor, eos: int | None) -> float:
    """Mean log-probability of an answer's tokens up to and with its first end-of-answer
    token (the padding after it is no part of the answer)."""
    ends = (tokens == eos).nonzero() if eos is not None else tokens.new_empty(0, 1)
    length = int(ends[0, 0]) + 1 if len(ends) else len(tokens)
    return float(logprobs[:length].mean()) if length else 0.0


@torch.inference_mode()
def _generate_batch(
    lm: LoadedModel, prompts: list[list[int]], max_new_tokens: int, compile_decode: bool
) -> list[str]:
    input_ids, attention = left_padded(lm, prompts)
    tokens, _ = _greedy(lm, input_ids, attention, max_new_tokens, compile_decode)
    return lm.tokenizer.batch_decode(tokens, skip_special_tokens=True)


def _use_fast_decode(lm: LoadedModel) -> bool:
    # On a CPU the step is compute-bound and `generate`'s overhead small: the fast path was
    # measured no faster there (SmolLM2-135M shape, batch 16, 300+64 tokens: 35 vs 37 tok/s),
    # so `generate` stays the CPU path.
    return lm.backend.fast_decode and supports_fast_decode(lm.model)


STREAM_TIMEOUT_S = 300.0
"""Longest wait for a stream's next piece before it fails with `GenerationTimeoutError`: a
generation that stalls never leaves its caller (and the model lock it holds) waiting."""


def stream(lm: LoadedModel, user: str, max_new_tokens: int) -> Iterator[str]:
    """Yield the greedy answer to `user` piece by piece as it is generated. An error of the
    generating thread is raised here; closing the stream early stops the generation."""
    timeout = STREAM_TIMEOUT_S
    streamer = TextIteratorStreamer(
        lm.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=timeout
    )
    input_ids = torch.tensor([encode_prompt(lm.tokenizer, user)], device=lm.device)
    stop = Event()
    kwargs = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "max_new_tokens": max_new_tokens,
        "do_sample": False,
        "pad_token_id": lm.tokenizer.pad_token_id,
        "streamer": streamer,
        "stopping_criteria": StoppingCriteriaList([_Stopped(stop)]),
    }
    failures: list[Exception] = []
    thread = Thread(target=_generate_into, args=(lm, kwargs, failures), daemon=True)
    thread.start()
    stalled = False
    try:
        yield from (piece for piece in streamer if piece)
    except Empty:
        stalled = True
        raise GenerationTimeoutError(
            f"no text was generated for {timeout:g} s (STREAM_TIMEOUT_S); the model is stuck "
            "or too slow on this device: try a smaller max_new_tokens or a faster device"
        ) from None
    finally:
        stop.set()
        thread.join(0 if stalled else timeout)
    if failures:
        raise failures[0]


class _Stopped(StoppingCriteria):
    """Ends `generate` once the stream's consumer has gone (the stream closed early)."""

    def __init__(self, stop: Event) -> None:
        self._stop = stop

    def __call__(self, input_ids: torch.Tensor, scores: object, **kwargs: object) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self._stop.is_set(), device=input_ids.device)


def _generate_into(lm: LoadedModel, kwargs: dict, failures: list[Exception]) -> None:
    """`generate` streaming into `kwargs["streamer"]`; an error ends the stream and is kept
    in `failures` for the consumer to raise."""
    try:
        with torch.inference_mode():
            lm.model.generate(**kwargs)
    except Exception as error:
        failures.append(error)
        kwargs["streamer"].on_finalized_text("", stream_end=True)
