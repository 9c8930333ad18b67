"""A faster student step for the same distillation loss as `consolidate.train_student`.

What the reference step spends time on besides the model: building each batch with Python
loops on the CPU and copying it synchronously, and re-aligning every row's answer logits
with a per-row copy. For a small model the step is bound by Python and kernel launches,
and the card is left mostly idle. Here:

* `collate` builds the padded batch once, in pinned memory, copied without blocking;
* rows are right-padded with no attention mask and the LM head runs only at the answer
  positions (`answer_positions`), so attention takes the fast causal path;
* `length_bucketed_batches` groups examples of similar length, so less padding is computed;
* `GraphedStudentTrainer` captures the whole step (forward, backward, clip, fused AdamW) in
  one CUDA graph per padded shape and replays it, so the host launches one graph instead
  of each of the step's kernels (measured by `benchmarks/speed.py`: see
  benchmarks/RESULTS.md).

The LoRA updates are computed in the activations' dtype (`student_lora`): peft's float32
path cast every layer's input to float32 and back. (bfloat16 autocast of peft's path was
measured slower on the 135M shape: it adds casts instead of removing them.)

The loss is `distillation.topk_kl_loss` on the same logits, so values match the reference
step up to the rounding of other kernels.

Like the reference step, a step whose gradient is not finite is skipped on the device
(`optimizer.clip_and_step`).

`consolidate.train_student` trains with `graphed_trainer` on CUDA: one trainer per model,
kept across transformations, so each padded shape is captured once per process.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..config import ConsolidationConfig
from ..losses import topk_kl_loss
from ..records import Example
from .answer_indexing import answer_mask, answer_positions, logits_at, right_padded
from .host_copies import copy_into, to_device
from .models import LoadedModel
from .optimizer import capturable_adamw, clip_and_step, reset_state
from .student_lora import lora_in_activation_dtype

logger = logging.getLogger(__name__)


@dataclass
class StudentBatch:
    input_ids: torch.Tensor
    """[batch, width], right-padded student sequences (prompt + answer + end token)."""
    answer_positions: torch.Tensor
    """[batch, longest answer], the position whose logits predict each answer token."""
    topk_ids: torch.Tensor
    """[batch, longest answer, k] teacher top-k ids, from each row's first answer token."""
    topk_logprobs: torch.Tensor
    answer_mask: torch.Tensor
    """[batch, longest answer], True on each row's answer tokens (the first answer_len)."""


def length_bucketed_batches(
    examples: Sequence[Example], batch_size: int, rng: random.Random
) -> list[list[Example]]:
    """Batches of examples of similar student length, in random order."""
    ordered = sorted(examples, key=lambda e: (len(e.student_ids), rng.random()))
    groups = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    rng.shuffle(groups)
    return groups


def collate(examples: Sequence[Example], pad_id: int, device: torch.device) -> StudentBatch:
    answer_lens = [e.answer_len for e in examples]
    tensors = (
        right_padded([e.student_ids for e in examples], pad_id),
        answer_positions([len(e.student_ids) for e in examples], answer_lens),
        *stack_targets(examples, torch.device("cpu")),
        answer_mask(answer_lens),
    )
    return StudentBatch(*(to_device(t, device) for t in tensors))


def stack_targets(
    examples: Sequence[Example], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The examples' teacher top-k ids and log-probs, [rows, longest answer, k], each row's
    from its first answer token on (zeros past its answer)."""
    longest, k = max(e.answer_len for e in examples), examples[0].topk_ids.shape[-1]
    ids = torch.zeros((len(examples), longest, k), dtype=torch.long)
    logprobs = torch.zeros((len(examples), longest, k), dtype=torch.float32)
    for row, example in enumerate(examples):
        ids[row, : example.answer_len] = example.topk_ids
        logprobs[row, : example.answer_len] = example.topk_logprobs
    return to_device(ids, device), to_device(logprobs, device)


def answer_position_logits(model, batch: StudentBatch) -> torch.Tensor:
    """[batch, longest answer, vocab] logits predicting each row's answer tokens."""
    return logits_at(model, batch.input_ids, batch.answer_positions)


def student_kl_loss(model, batch: StudentBatch) -> torch.Tensor:
    with lora_in_activation_dtype(model):
        logits = answer_position_logits(model, batch)
    return topk_kl_loss(logits, batch.topk_ids, batch.topk_logprobs, batch.answer_mask)


def train_step(
    model,
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    batch: StudentBatch,
    max_grad_norm: float,
) -> torch.Tensor:
    """One optimiser step; returns the loss as a device tensor (no host sync)."""
    loss = student_kl_loss(model, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip_and_step(optimizer, params, max_grad_norm)
    return loss.detach()


_WIDTH_BUCKET = 32
_ANSWER_BUCKET = 16
_WARMUP_STEPS = 3


class GraphedStudentTrainer:
    """Student steps replayed from CUDA graphs, one per padded shape: batches are padded to
    `rows` rows, widths to a multiple of 32 and answers to a multiple of 16, so a few graphs
    serve a whole training run. Off CUDA the same step runs eagerly.

    Why this is safe: every tensor the step reads or writes is static (the batch buffers,
    weights, gradients allocated at capture, optimiser state, the learning-rate tensor) and
    the step has no host sync. Capturing needs a few real warm-up steps first; they are
    undone (weights and optimiser state restored) before training goes on. Padding rows
    and positions carry no answer tokens and come after every real token, so they change
    neither the loss nor the gradients.
    """

    def __init__(
        self,
        model,
        optimizer: torch.optim.Optimizer,
        params: list[torch.nn.Parameter],
        max_grad_norm: float,
        rows: int,
        pad_id: int,
    ):
        self.model, self.optimizer, self.params = model, optimizer, params
        self.max_grad_norm, self.rows, self.pad_id = max_grad_norm, rows, pad_id
        self.device = params[0].device
        self._steps: dict[tuple[int, int], _StaticStep] = {}
        # One memory pool for every shape's graph: a step's activations and gradients live
        # only during its replay (its outputs are copied out at once), so graphs can reuse
        # one another's memory. Without it each shape kept its own pool, and for a small
        # model those pools held much of the memory of processes that ran out of it.
        self._pool = torch.cuda.graph_pool_handle() if self.device.type == "cuda" else None

    def serves(
        self, params: list[torch.nn.Parameter], max_grad_norm: float, rows: int, pad_id: int
    ) -> bool:
        """Whether this trainer steps exactly these weights with these settings."""
        same_weights = len(params) == len(self.params) and all(
            a is b for a, b in zip(params, self.params, strict=False)
        )
        return same_weights and (max_grad_norm, rows, pad_id) == (
            self.max_grad_norm,
            self.rows,
            self.pad_id,
        )

    def step(self, examples: Sequence[Example]) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step on `examples` (at most `rows`); the loss, and 1.0 if the step
        was skipped (gradient not finite), as device tensors."""
        width = _round_up(max(len(e.student_ids) for e in examples), _WIDTH_BUCKET)
        longest = min(width - 1, _round_up(max(e.answer_len for e in examples), _ANSWER_BUCKET))
        static = self._steps.get((width, longest))
        if static is None:
            k = examples[0].topk_ids.shape[-1]
            static = _StaticStep(self.rows, width, longest, k, self.device)
            self._steps[(width, longest)] = static
        static.load(examples, self.pad_id)
        if static.graph is None and not static.eager:
            self._capture(static)
        if static.eager:
            self.optimizer.zero_grad(set_to_none=True)
            return self._body(static)
        static.graph.replay()
        return static.loss.clone(), static.skipped.clone()

    def _body(self, static: _StaticStep) -> tuple[torch.Tensor, torch.Tensor]:
        with lora_in_activation_dtype(self.model):
            logits = logits_at(self.model, static.input_ids, static.answer_positions)
        loss = topk_kl_loss(logits, static.topk_ids, static.topk_logprobs, static.answer_mask)
        loss.backward()
        skipped = clip_and_step(self.optimizer, self.params, self.max_grad_norm)
        return loss.detach(), skipped

    def _capture(self, static: _StaticStep) -> None:
        restore = _snapshot(self.params, self.optimizer)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(_WARMUP_STEPS):
                self.optimizer.zero_grad(set_to_none=True)
                self._body(static)
        torch.cuda.current_stream().wait_stream(side)
        restore()
        # Gradients allocated inside the capture are this graph's own: its backward writes
        # them and its optimiser step reads them, whatever other graphs do.
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=self._pool):
                static.loss, static.skipped = self._body(static)
        except RuntimeError as error:
            # Still correct, only slower: this shape's steps run eagerly.
            logger.warning("CUDA graph capture of the student step failed: %s", error)
            restore()
            self.optimizer.zero_grad(set_to_none=True)
            static.eager = True
            return
        static.graph = graph


_TRAINER_ATTRIBUTE = "_parametric_memory_graphed_trainer"
"""Where a model keeps its graphed trainer. On the model, not in a module-level weak
dictionary: the trainer refers to the model, so a dictionary entry would keep every model
(and its graphs' GPU memory) alive; a model -> trainer -> model cycle is collected with it."""


def graphed_trainer(
    lm: LoadedModel, params: list[torch.nn.Parameter], config: ConsolidationConfig
) -> GraphedStudentTrainer:
    """`lm`'s trainer with its optimiser reset to fresh and the learning rate of `config`.
    Its graphs hold the addresses of the weights, gradients and optimiser state, so the same
    trainer serves every transformation of a process while the adapter's weights are the
    same tensors (shard switches load weights into them in place)."""
    trainer = lm.model.__dict__.get(_TRAINER_ATTRIBUTE)
    wanted = (config.max_grad_norm, config.batch_size, lm.tokenizer.pad_token_id)
    if trainer is None or not trainer.serves(params, *wanted):
        optimizer = capturable_adamw(params, config.learning_rate, params[0].device)
        trainer = GraphedStudentTrainer(lm.model, optimizer, params, *wanted)
        # Set through __dict__: nn.Module's and peft's attribute hooks are not wanted here.
        lm.model.__dict__[_TRAINER_ATTRIBUTE] = trainer
    reset_state(trainer.optimizer)
    return trainer


def release_trainer(model: torch.nn.Module) -> None:
    """Drop `model`'s graphed trainer (its graphs and their GPU memory)."""
    model.__dict__.pop(_TRAINER_ATTRIBUTE, None)


class _StaticStep:
    """The batch buffers of one padded shape, its graph and its loss output."""

    def __init__(self, rows: int, width: int, longest: int, k: int, device: torch.device):
        long = {"dtype": torch.long, "device": device}
        self.input_ids = torch.zeros((rows, width), **long)
        self.answer_positions = torch.zeros((rows, longest), **long)
        self.topk_ids = torch.zeros((rows, longest, k), **long)
        self.topk_logprobs = torch.zeros((rows, longest, k), dtype=torch.float32, device=device)
        self.answer_mask = torch.zeros((rows, longest), dtype=torch.bool, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.loss: torch.Tensor | None = None
        self.skipped: torch.Tensor | None = None
        self.eager = device.type != "cuda"

    def load(self, examples: Sequence[Example], pad_id: int) -> None:
        """Copy `examples` into the buffers: the batch in the top-left corner of each, pad
        tokens and no answer around it."""
        batch = collate(list(examples), pad_id, torch.device("cpu"))
        used, width = batch.input_ids.shape
        answers = batch.answer_mask.shape[1]
        ids = torch.full(self.input_ids.shape, pad_id, dtype=torch.long)
        ids[:used, :width] = batch.input_ids
        copy_into(self.input_ids, ids)
        for target, source in (
            (self.answer_positions, batch.answer_positions),
            (self.topk_ids, batch.topk_ids),
            (self.topk_logprobs, batch.topk_logprobs),
            (self.answer_mask, batch.answer_mask),
        ):
            padded = torch.zeros(target.shape, dtype=source.dtype)
            padded[:used, :answers] = source
            copy_into(target, padded)


def _snapshot(params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer) -> Callable:
    """A function that puts the weights and optimiser state back as they are now, in place
    (graphs hold their addresses). State the optimiser creates later is reset to fresh."""
    weights = [p.detach().clone() for p in params]
    states = {id(p): {k: v.clone() for k, v in optimizer.state[p].items()} for p in params}

    @torch.no_grad()
    def restore() -> None:
        for param, weight in zip(params, weights, strict=True):
            param.copy_(weight)
            for name, value in optimizer.state[param].items():
                saved = states[id(param)].get(name)
                if saved is None:
                    value.zero_()
                else:
                    value.copy_(saved)

    return restore


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
