"""Greedy decoding of left-padded prompt batches without per-step Python overhead.

Plain `generate` re-enters Python, the HF model code and the peft wrappers for every token;
on a GPU a small model then runs at the speed of the interpreter, not of the card. Here:

* the prompt is prefilled once through the model's own code path (a `DynamicCache`, the
  same 2-D mask and position ids as `generate`), and its keys/values are copied into a
  preallocated static cache;
* one decode step (model forward on one token per row, argmax, EOS/pad bookkeeping, cache
  write, position and mask update) only touches preallocated tensors, so on CUDA it is
  captured once in a CUDA graph and replayed; on a CPU the same step runs eagerly;
* the host reads the "all rows finished" flag only every `_CHECK_EVERY` steps;
* with `compile_step=True` the model's forward inside the step goes through `torch.compile`
  first (transformers' own RMSNorm/MLP code, which it fuses with the adds and casts around
  them). That helps at batch 1, where launches bound the step, not at larger batches (at
  the largest it is slower), and every batch and cache-length bucket needs its own long
  compile. Hence opt-in (measured: see benchmarks/RESULTS.md).

Outputs are token-identical to `model.generate(..., do_sample=False)`: finished rows get the
pad token, and the result is trimmed to the step where the last row finished.

Graphs and peft: a captured graph freezes every Python-level branch taken during capture,
including peft's "adapter enabled?" and "which adapters are active?" and the LoRA scaling.
Graphs are therefore keyed by that adapter state (and by the storage of every weight), so
`with model.disable_adapter():` replays a graph captured with the adapter off. Weights
updated in place (optimiser steps, `reset_lora_parameters`, `load_state_dict`) are read by
the graph as they are at replay time, as are the per-row updates of `row_adapters` (their
forwards say which buffers they read).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from .fused_kernels import transformers_own_modules
from .models import cache_keyword, returned_cache, transformers_model

logger = logging.getLogger(__name__)

_SUPPORTED_MODEL_TYPES = frozenset({"llama"})
"""Architectures checked token-for-token against `generate`: plain causal attention over the
whole context and a per-layer `cache.update(key, value, layer_idx)` call."""
_HIDDEN_SCORE_BY_ATTENTION = {"sdpa": "-inf", "eager": "dtype min"}
"""What the decode step's additive 4-D mask holds where a row must not look. SDPA would turn a
boolean mask into -inf in every layer (a kernel per layer); it is done once per step here.
Eager attention adds the dtype's minimum, as transformers' own masks do."""
_CHECK_EVERY = 8
"""Decode steps between two reads of the finished flag (each read is a host-device sync)."""
_WARMUP_STEPS = 2
_MIN_CACHE_LENGTH = 256
_MAX_STOP_TOKENS = 8
_RUNNERS_PER_MODEL = 2
"""Graphed runners kept per model (each holds a KV cache of batch x length)."""
_COMPILED_SHAPES_LIMIT = 64
"""Compilations of the decode step kept per process (one per model, batch and cache length
bucket); past it, torch.compile would quietly fall back to the eager forward."""
_NEUTRAL_GENERATION_SETTINGS: dict[str, tuple] = {
    # Settings that make `generate` differ from a plain argmax when set.
    "repetition_penalty": (None, 1.0),
    "encoder_repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "force_words_ids": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "sequence_bias": (None,),
    "exponential_decay_length_penalty": (None,),
    "num_beams": (None, 1),
    "num_return_sequences": (None, 1),
    "penalty_alpha": (None,),
    "guidance_scale": (None, 1.0),
    "watermarking_config": (None,),
    "stop_strings": (None,),
    "max_time": (None,),
    "prefill_chunk_size": (None,),
}


def supports_fast_decode(model: nn.Module) -> bool:
    """Whether `greedy_generate` reproduces `model.generate(do_sample=False)` for `model`
    (a transformers causal LM, possibly wrapped by peft with LoRA adapters)."""
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None and getattr(peft_config, "is_prompt_learning", False):
        return False
    hf_model = transformers_model(model)
    config = getattr(hf_model, "config", None)
    if config is None or model.training:
        return False
    return (
        getattr(config, "model_type", None) in _SUPPORTED_MODEL_TYPES
        and not getattr(config, "is_encoder_decoder", False)
        and getattr(config, "_attn_implementation", None) in _HIDDEN_SCORE_BY_ATTENTION
        and getattr(config, "sliding_window", None) is None
        and _rope_type(config) not in ("dynamic", "longrope")
        and _plain_greedy_settings(getattr(hf_model, "generation_config", None))
    )


@torch.inference_mode()
def greedy_generate(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    *,
    eos_token_id: int | Sequence[int] | None,
    pad_token_id: int,
    static_shapes: bool | None = None,
    compile_step: bool = False,
    with_scores: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """What `model.generate(input_ids=..., attention_mask=..., max_new_tokens=...,
    do_sample=False, eos_token_id=..., pad_token_id=...)` returns: the prompts followed by the
    greedy continuations, [rows, width + generated]. `with_scores`: and the log-probability
    of each generated token, [rows, generated] (float32).

    `static_shapes` (default: on CUDA) rounds the batch and the cache length up to buckets and
    reuses the preallocated state across calls; on CUDA the decode step is then a CUDA graph.
    `compile_step` runs the model's forward in that step through `torch.compile` (see the
    module's docstring). Check `supports_fast_decode(model)` first.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    stop_ids = _stop_ids(eos_token_id)
    rows, width = input_ids.shape
    if static_shapes is None:
        static_shapes = input_ids.is_cuda
    decoder = _Decoder.of(model, compile_step)
    needed = width + max(max_new_tokens, _WARMUP_STEPS + 1)
    arguments = (decoder, input_ids, attention_mask, max_new_tokens, stop_ids, pad_token_id)
    with _RUNNERS_LOCK:  # cached runners hold mutable state: one caller at a time
        if static_shapes:
            runner = _cached_runner(model, decoder, batch_bucket(rows), _length_bucket(needed))
        else:
            runner = _DecodeRunner(rows, needed, input_ids.device, use_graph=False)
        tokens, scores = runner.run(*arguments)
    output = torch.cat([input_ids, tokens], dim=1)
    return (output, scores) if with_scores else output


def release_graphs(model: nn.Module | None = None) -> None:
    """Free the KV caches and CUDA graphs kept for `model` (for every model if None)."""
    with _RUNNERS_LOCK:
        if model is None:
            _RUNNERS.clear()
        else:
            _RUNNERS.pop(model, None)


@dataclass(frozen=True)
class _Decoder:
    """How to call the transformers model under `model` (peft's wrappers skipped: the LoRA
    layers are injected into it and obey the adapter switches all the same)."""

    model: nn.Module
    cache_argument: str
    """"cache" (transformers >= 5.2x) or "past_key_values" (earlier 5.x)."""
    hidden_score: str
    """A value of `_HIDDEN_SCORE_BY_ATTENTION`."""
    compiled: bool = False
    """The decode step's forward goes through `torch.compile`."""

    @staticmethod
    def of(model: nn.Module, compiled: bool = False) -> _Decoder:
        hf_model = transformers_model(model)
        attention = hf_model.config._attn_implementation
        hidden_score = _HIDDEN_SCORE_BY_ATTENTION[attention]
        return _Decoder(hf_model, cache_keyword(hf_model), hidden_score, compiled)

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """Last-position logits and the filled `DynamicCache`, exactly as `generate`'s first
        forward computes them."""
        positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
        output = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
        )
        return output.logits[:, -1], returned_cache(output)

    def step(self, tokens, positions, attention_mask, cache: _StaticKVCache) -> torch.Tensor:
        if not self.compiled:
            return _one_token_logits(
                self.model, self.cache_argument, tokens, positions, attention_mask, cache
            )
        with torch._dynamo.config.patch(recompile_limit=_COMPILED_SHAPES_LIMIT):
            return _compiled_one_token_logits()(
                self.model, self.cache_argument, tokens, positions, attention_mask, cache
            )


def _one_token_logits(model, cache_argument: str, tokens, positions, attention_mask, cache):
    output = model(
        input_ids=tokens,
        attention_mask=attention_mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
        **{cache_argument: cache},
    )
    return output.logits[:, -1]


@functools.cache
def _compiled_one_token_logits():
    # One compiled function for the process: its compilations are cached with it (a new
    # `torch.compile` wrapper would compile again), and it holds no model, so models are freed.
    return torch.compile(_one_token_logits, dynamic=False)


class _StaticKVCache:
    """The part of transformers' `Cache` interface the attention layers use: `update` writes
    the new keys/values at `slot` and returns the whole preallocated cache (the 4-D mask
    hides slots not written yet). Duck-typed, so no version-specific `Cache` internals."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], slot: torch.Tensor):
        self.keys, self.values, self.slot = keys, values, slot

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        keys.index_copy_(2, self.slot, key_states)
        values.index_copy_(2, self.slot, value_states)
        return keys, values


class _DecodeRunner:
    """Preallocated decode state for `batch` rows and a cache of `length` positions, with its
    decode step (a CUDA graph once captured). Holds no reference to the model."""

    def __init__(self, batch: int, length: int, device: torch.device, use_graph: bool):
        self.batch, self.length, self.use_graph = batch, length, use_graph
        long = {"dtype": torch.long, "device": device}
        self.tokens = torch.zeros((batch, 1), **long)
        self.positions = torch.zeros((batch, 1), **long)
        self.slot = torch.zeros(1, **long)
        self.step = torch.zeros(1, **long)
        self.pad = torch.zeros((), **long)
        self.stop_ids = torch.full((_MAX_STOP_TOKENS,), -1, **long)
        self.out = torch.zeros((batch, length), **long)
        self.scores = torch.zeros((batch, length), dtype=torch.float32, device=device)
        self.visible = torch.zeros((batch, length), dtype=torch.bool, device=device)
        self.unfinished = torch.zeros(batch, dtype=torch.bool, device=device)
        self.cache: _StaticKVCache | None = None
        self.graph: torch.cuda.CUDAGraph | None = None

    def run(self, decoder, input_ids, attention_mask, max_new_tokens, stop_ids, pad_id):
        rows = input_ids.shape[0]
        input_ids, attention_mask = self._fill_rows(input_ids, attention_mask, pad_id)
        logits, prefill_cache = decoder.prefill(input_ids, attention_mask)
        first = logits.argmax(-1)
        first_score = _chosen_log_probability(logits, first)
        self._store_prompt_cache(prefill_cache, attention_mask)
        del prefill_cache
        self._reset(attention_mask, first, first_score, rows, stop_ids, pad_id)
        if self.use_graph and self.graph is None:
            self._capture_or_go_eager(decoder)
            self._reset(attention_mask, first, first_score, rows, stop_ids, pad_id)
        steps = self._decode(decoder, max_new_tokens, bool(stop_ids))
        steps = _steps_to_last_stop(self.out[:rows, :steps], stop_ids)
        return self.out[:rows, :steps].clone(), self.scores[:rows, :steps].clone()

    def _fill_rows(self, input_ids, attention_mask, pad_id: int):
        """Add all-padding rows up to the bucketed batch size (marked finished at once)."""
        missing = self.batch - input_ids.shape[0]
        if missing == 0:
            return input_ids, attention_mask
        ids = torch.full((missing, input_ids.shape[1]), pad_id, dtype=input_ids.dtype)
        return (
            torch.cat([input_ids, ids.to(input_ids.device)]),
            torch.cat([attention_mask, torch.zeros_like(ids).to(attention_mask)]),
        )

    def _store_prompt_cache(self, prefill_cache, attention_mask: torch.Tensor) -> None:
        width = attention_mask.shape[1]
        padding = (attention_mask == 0)[:, None, :, None]
        layers = [(layer.keys, layer.values) for layer in prefill_cache.layers]
        if self.cache is None:
            self.cache = _StaticKVCache(
                [self._allocate(keys) for keys, _ in layers],
                [self._allocate(values) for _, values in layers],
                self.slot,
            )
        for index, (keys, values) in enumerate(layers):
            # Padding slots are never attended to, but must not hold NaN/inf: a masked
            # weight of 0 times NaN is still NaN.
            self.cache.keys[index][:, :, :width].copy_(keys.masked_fill(padding, 0))
            self.cache.values[index][:, :, :width].copy_(values.masked_fill(padding, 0))

    def _allocate(self, like: torch.Tensor) -> torch.Tensor:
        batch, heads, _, dim = like.shape
        return torch.zeros((batch, heads, self.length, dim), dtype=like.dtype, device=like.device)

    def _reset(self, attention_mask, first, first_score, rows, stop_ids, pad_id: int) -> None:
        """Load the state after the prefill: the first token generated, at slot `width`."""
        width = attention_mask.shape[1]
        self.visible.zero_()
        self.visible[:, :width] = attention_mask.bool()
        self.visible[:, width] = True
        self.tokens[:, 0] = first
        self.positions[:, 0] = attention_mask.long().sum(-1)
        self.slot.fill_(width)
        self.step.fill_(1)
        self.pad.fill_(pad_id)
        self.stop_ids.fill_(-1)
        if stop_ids:
            self.stop_ids[: len(stop_ids)] = torch.tensor(stop_ids, dtype=torch.long)
        self.out.fill_(pad_id)
        self.out[:, 0] = first
        self.scores.zero_()
        self.scores[:, 0] = first_score
        self.unfinished.zero_()
        self.unfinished[:rows] = ~self._is_stop(first[:rows])

    def _is_stop(self, tokens: torch.Tensor) -> torch.Tensor:
        return (tokens[:, None] == self.stop_ids).any(-1)

    def _step(self, decoder: _Decoder) -> None:
        """One decode step on the preallocated state only (no allocation visible outside,
        no host sync): the body of the CUDA graph."""
        logits = decoder.step(
            self.tokens, self.positions, self._attention_mask(decoder), self.cache
        )
        token = torch.where(self.unfinished, logits.argmax(-1), self.pad)
        self.out.index_copy_(1, self.step, token[:, None])
        self.scores.index_copy_(1, self.step, _chosen_log_probability(logits, token)[:, None])
        self.unfinished &= ~self._is_stop(token)
        self.tokens.copy_(token[:, None])
        self.positions.add_(1)
        self.slot.add_(1)
        self.step.add_(1)
        self.visible.index_fill_(1, self.slot, True)

    def _attention_mask(self, decoder: _Decoder) -> torch.Tensor:
        visible = self.visible[:, None, None, :]
        dtype = self.cache.keys[0].dtype
        hidden = -torch.inf if decoder.hidden_score == "-inf" else torch.finfo(dtype).min
        mask = torch.zeros(visible.shape, dtype=dtype, device=visible.device)
        return mask.masked_fill_(~visible, hidden)

    def _capture_or_go_eager(self, decoder: _Decoder) -> None:
        start = time.perf_counter()
        try:
            self._capture(decoder)
        except RuntimeError as error:
            # Correct either way: the same step then runs uncompiled or eagerly, only slower.
            if decoder.compiled:
                logger.warning("compiling the decode step failed, capturing it as is: %s", error)
                self._capture_or_go_eager(dataclasses.replace(decoder, compiled=False))
                return
            logger.warning("CUDA graph capture failed, decoding without it: %s", error)
            self.use_graph, self.graph = False, None
            return
        logger.debug(
            "captured the decode step for batch %d, cache %d in %.2f s",
            self.batch,
            self.length,
            time.perf_counter() - start,
        )

    def _capture(self, decoder: _Decoder) -> None:
        with transformers_own_modules(decoder.model) if decoder.compiled else nullcontext():
            self._capture_step(decoder)

    def _capture_step(self, decoder: _Decoder) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(_WARMUP_STEPS):  # lazy cuBLAS/kernel initialisation, not capturable
                self._step(decoder)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._step(decoder)
        self.graph = graph

    def _decode(self, decoder: _Decoder, max_new_tokens: int, can_stop: bool) -> int:
        """Run up to `max_new_tokens - 1` steps (the prefill made the first token); return
        how many tokens were generated."""
        generated, remaining = 1, max_new_tokens - 1
        while remaining > 0:
            if can_stop and not bool(self.unfinished.any()):
                break
            chunk = min(_CHECK_EVERY, remaining)
            for _ in range(chunk):
                if self.graph is not None:
                    self.graph.replay()
                else:
                    self._step(decoder)
            generated += chunk
            remaining -= chunk
        return generated


def _chosen_log_probability(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[row, tokens[row]] for each row, in float32."""
    return logits.float().log_softmax(-1).gather(-1, tokens[:, None]).squeeze(-1)


def _steps_to_last_stop(tokens: torch.Tensor, stop_ids: list[int]) -> int:
    """The columns up to where every row had finished (`generate` stops right there)."""
    if not stop_ids:
        return tokens.shape[1]
    is_stop = torch.isin(tokens, torch.tensor(stop_ids, device=tokens.device))
    if not bool(is_stop.any(1).all()):
        return tokens.shape[1]
    return int(is_stop.int().argmax(1).max()) + 1


_RUNNERS_LOCK = threading.RLock()
_RUNNERS: weakref.WeakKeyDictionary[nn.Module, OrderedDict[tuple, _DecodeRunner]] = (
    weakref.WeakKeyDictionary()
)


def _cached_runner(model: nn.Module, decoder: _Decoder, batch: int, length: int) -> _DecodeRunner:
    device = next(decoder.model.parameters()).device
    key = (batch, length, _graph_signature(model, decoder))
    runners = _RUNNERS.setdefault(model, OrderedDict())
    if key in runners:
        runners.move_to_end(key)
        return runners[key]
    while len(runners) >= _RUNNERS_PER_MODEL:
        runners.popitem(last=False)
    runner = _DecodeRunner(batch, length, device, use_graph=device.type == "cuda")
    runners[key] = runner
    return runner


def _graph_signature(model: nn.Module, decoder: _Decoder) -> int:
    """Everything a captured graph froze: the adapter switches and scalings peft branches on
    in Python, the storage of every weight (a tensor swapped for a new one, rather than
    updated in place, would leave the graph reading the old memory), and any forward a layer
    was given in place of its class's (its `graph_key`, what it reads; else itself)."""
    adapters = tuple(
        (
            bool(getattr(module, "disable_adapters", False)),
            bool(getattr(module, "merged", False)),
            tuple(getattr(module, "active_adapters", ())),
            tuple(sorted(getattr(module, "scaling", {}).items())),
        )
        for module in decoder.model.modules()
        if hasattr(module, "active_adapters") and hasattr(module, "merged")
    )
    storage = tuple(t.data_ptr() for t in (*model.parameters(), *model.buffers()))
    overrides = tuple(
        getattr(vars(module)["forward"], "graph_key", id(vars(module)["forward"]))
        for module in decoder.model.modules()
        if "forward" in vars(module)
    )
    signature = (adapters, storage, overrides)
    return hash((signature, decoder.cache_argument, decoder.hidden_score, decoder.compiled))


def batch_bucket(rows: int) -> int:
    """The batch size a static-shape decode of `rows` rows runs at."""
    return 1 << (rows - 1).bit_length()


def _length_bucket(needed: int) -> int:
    """Cache lengths of 2^k and 1.5 * 2^k, under 1.5x what is needed: the decode step attends
    over the whole cache, so power-of-two buckets alone cost up to 2x the attention needed
    (and attention is a large share of the step's GPU time), while each new bucket is one
    more capture."""
    power = 1 << (needed - 1).bit_length()
    three_quarters = power // 4 * 3
    return max(_MIN_CACHE_LENGTH, three_quarters if three_quarters >= needed else power)


def _stop_ids(eos_token_id: int | Sequence[int] | None) -> list[int]:
    if eos_token_id is None:
        return []
    ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    if len(ids) > _MAX_STOP_TOKENS:
        raise ValueError(f"at most {_MAX_STOP_TOKENS} end tokens, got {len(ids)}")
    return ids


def _rope_type(config) -> str:
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    if not isinstance(rope, dict):
        return "default"
    return str(rope.get("rope_type", rope.get("type", "default")))


def _plain_greedy_settings(generation_config) -> bool:
    if generation_config is None:
        return True
    return all(
        getattr(generation_config, name, None) in neutral
        for name, neutral in _NEUTRAL_GENERATION_SETTINGS.items()
    )
