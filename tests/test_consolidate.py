"""Consolidation keeps the adapter finite: a step whose gradient overflows is skipped on the
device (the weights stay as they were), and weights that still end up NaN are put back and
reported instead of being committed."""

from __future__ import annotations

import contextlib
import gc
import random
import weakref

import pytest
import torch
from test_fast_generation import load, model_dir, random_examples, with_lora  # noqa: F401
from transformers import AutoTokenizer

from parametric_memory import TrainingDivergedError
from parametric_memory.config import ConsolidationConfig
from parametric_memory.engine import fast_distillation
from parametric_memory.engine.fast_distillation import capturable_adamw, collate, train_step
from parametric_memory.engine.models import LoadedModel
from parametric_memory.engine.optimizer import clip_and_step, set_learning_rate
from parametric_memory.method.consolidate import (
    _distillation_loss,
    _refuse_non_finite_weights,
    backward_in_length_groups,
    length_groups,
    train_student,
)
from parametric_memory.records import TrainingStats, batches
from parametric_memory.schedule import warmup_then_linear_decay


def student(model_dir, device: str = "cpu") -> LoadedModel:  # noqa: F811
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return LoadedModel(with_lora(load(model_dir, device)), tokenizer, "tiny", "tiny")


def adapter_weights(lm: LoadedModel) -> list[torch.Tensor]:
    return [p.detach().clone() for p in lm.model.parameters() if p.requires_grad]


CONFIG = ConsolidationConfig(epochs=1, batch_size=1, learning_rate=1e-2, warmup_ratio=0.0)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


@contextlib.contextmanager
def no_host_syncs():
    """Inside, any operation that makes the host wait for the GPU raises."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("device", DEVICES)
def test_a_step_with_a_nan_loss_is_skipped_and_the_others_train(model_dir, device):  # noqa: F811
    lm = student(model_dir, device)
    examples = random_examples(lm.model, 3, seed=5)
    examples[1].topk_logprobs = torch.full_like(examples[1].topk_logprobs, float("nan"))
    before = adapter_weights(lm)
    stats = train_student(lm, examples, CONFIG, random.Random(0))
    after = adapter_weights(lm)
    assert stats.steps == 3 and stats.skipped_steps == 1
    assert all(bool(torch.isfinite(p).all()) for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))


@pytest.mark.parametrize("device", DEVICES)
def test_every_step_nan_leaves_the_adapter_exactly_as_it_was(model_dir, device):  # noqa: F811
    lm = student(model_dir, device)
    examples = random_examples(lm.model, 2, seed=6)
    for example in examples:
        example.topk_logprobs = torch.full_like(example.topk_logprobs, float("inf"))
    before = adapter_weights(lm)
    stats = train_student(lm, examples, CONFIG, random.Random(0))
    assert stats.skipped_steps == stats.steps == 2
    for a, b in zip(adapter_weights(lm), before, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_non_finite_weights_are_restored_and_reported(model_dir):  # noqa: F811
    lm = student(model_dir)
    params = [p for p in lm.model.parameters() if p.requires_grad]
    before = adapter_weights(lm)
    with torch.no_grad():
        params[3][0, 0] = float("nan")
    with pytest.raises(TrainingDivergedError, match="restored"):
        _refuse_non_finite_weights(params, before, TrainingStats(4, 2.0, float("nan")))
    for a, b in zip(adapter_weights(lm), before, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_faster_step_skips_a_nan_step_too(model_dir):  # noqa: F811
    lm = student(model_dir)
    params = [p for p in lm.model.parameters() if p.requires_grad]
    examples = random_examples(lm.model, 3, seed=7)
    examples[0].topk_logprobs = torch.full_like(examples[0].topk_logprobs, float("nan"))
    optimizer = capturable_adamw(params, 1e-2, torch.device("cpu"))
    before = adapter_weights(lm)
    train_step(lm.model, optimizer, params, collate(examples, 0, torch.device("cpu")), 1.0)
    for a, b in zip(adapter_weights(lm), before, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def eager_transformation(lm: LoadedModel, examples, config, rng) -> list[float]:
    """`train_student`'s loop stepped eagerly with a fresh optimiser: the reference."""
    params = [p for p in lm.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0, fused=True)
    total = config.epochs * -(-len(examples) // config.batch_size)
    schedule = warmup_then_linear_decay(total, config.warmup_ratio)
    losses: list[float] = []
    lm.model.train()
    for _ in range(config.epochs):
        order = examples[:]
        rng.shuffle(order)
        for batch in batches(order, config.batch_size):
            set_learning_rate(optimizer, config.learning_rate * schedule(len(losses)))
            loss = _distillation_loss(lm, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_and_step(optimizer, params, config.max_grad_norm)
            losses.append(float(loss.detach()))
    lm.model.eval()
    return losses


@CUDA
def test_cuda_training_reuses_its_graphs_across_transformations_like_a_fresh_trainer(
    model_dir,  # noqa: F811
):
    """On CUDA `train_student` steps through one graphed trainer per model, kept across
    transformations with its optimiser reset: a second transformation (partial batches,
    warm-up) trains exactly as with a new trainer, and the first like eager steps."""
    config = ConsolidationConfig(epochs=2, batch_size=4, learning_rate=1e-2, warmup_ratio=0.2)
    kept, fresh, eager = (student(model_dir, "cuda") for _ in range(3))
    first, second = (random_examples(eager.model, 10, seed=seed) for seed in (7, 8))
    losses = eager_transformation(eager, first, config, random.Random(7))
    for lm in (kept, fresh):
        stats = train_student(lm, first, config, random.Random(7))
        assert stats.steps == len(losses) == 6
        assert stats.last_loss == pytest.approx(losses[-1], rel=2e-2)
    trainer = fast_distillation.graphed_trainer(kept, adapter_params(kept), config)
    assert any(step.graph is not None for step in trainer._steps.values())
    fast_distillation.release_trainer(fresh.model)
    train_student(kept, second, config, random.Random(8))
    train_student(fresh, second, config, random.Random(8))
    assert fast_distillation.graphed_trainer(kept, adapter_params(kept), config) is trainer
    for ours, reference in zip(adapter_weights(kept), adapter_weights(fresh), strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5)


def test_a_models_graphed_trainer_does_not_keep_the_model_alive(model_dir):  # noqa: F811
    lm = student(model_dir)
    trainer = fast_distillation.graphed_trainer(lm, adapter_params(lm), CONFIG)
    assert fast_distillation.graphed_trainer(lm, adapter_params(lm), CONFIG) is trainer
    model = weakref.ref(lm.model)
    del lm, trainer
    gc.collect()
    assert model() is None


def adapter_params(lm: LoadedModel) -> list[torch.nn.Parameter]:
    return [p for p in lm.model.parameters() if p.requires_grad]


def test_backward_in_length_groups_gives_the_whole_batchs_gradient(model_dir):  # noqa: F811
    lm = student(model_dir)
    batch = random_examples(lm.model, 8, seed=9)
    assert len(length_groups(batch)) > 1  # lengths 6-40: splitting pays
    params = adapter_params(lm)
    _distillation_loss(lm, batch).backward()
    whole = [p.grad.clone() for p in params]
    expected = float(_distillation_loss(lm, batch))
    for p in params:
        p.grad = None
    loss = backward_in_length_groups(lm, batch)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    for grouped, reference in zip((p.grad for p in params), whole, strict=True):
        torch.testing.assert_close(grouped, reference, rtol=1e-3, atol=1e-6)


def test_length_groups_cut_off_an_outlier_and_keep_every_example_once(model_dir):  # noqa: F811
    examples = random_examples(student(model_dir).model, 8, seed=10)
    for example, length in zip(examples, [60, 62, 61, 63, 64, 60, 61, 260], strict=True):
        example.student_ids = [5] * length
    groups = length_groups(examples)
    assert sorted(id(e) for g in groups for e in g) == sorted(id(e) for e in examples)
    assert [len(e.student_ids) for e in groups[-1]] == [260]
    similar = random_examples(student(model_dir).model, 8, seed=11)
    for example in similar:
        example.student_ids = [5] * 100
    assert len(length_groups(similar)) == 1
