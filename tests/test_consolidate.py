"""Consolidation keeps the adapter finite: a step whose gradient overflows is skipped on the
device (the weights stay as they were), and weights that still end up NaN are put back and
reported instead of being committed."""

from __future__ import annotations

import random

import pytest
import torch
from test_fast_generation import load, model_dir, random_examples, with_lora  # noqa: F401
from transformers import AutoTokenizer

from parametric_memory import TrainingDivergedError, fast_distillation
from parametric_memory.config import ConsolidationConfig
from parametric_memory.consolidate import TrainingStats, _refuse_non_finite_weights, train_student
from parametric_memory.fast_distillation import capturable_adamw, collate, train_step
from parametric_memory.models import LoadedModel


def student(model_dir, device: str = "cpu") -> LoadedModel:  # noqa: F811
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return LoadedModel(with_lora(load(model_dir, device)), tokenizer, "tiny", "tiny")


def adapter_weights(lm: LoadedModel) -> list[torch.Tensor]:
    return [p.detach().clone() for p in lm.model.parameters() if p.requires_grad]


CONFIG = ConsolidationConfig(epochs=1, batch_size=1, learning_rate=1e-2, warmup_ratio=0.0)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


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


@CUDA
def test_cuda_training_replays_its_graphs_across_transformations_and_matches_cpu(
    model_dir,  # noqa: F811
):
    """On CUDA `train_student` steps through one graphed trainer per model, kept across
    transformations with its optimiser reset: two transformations train like on the CPU."""
    config = ConsolidationConfig(epochs=2, batch_size=4, learning_rate=1e-2, warmup_ratio=0.2)
    on_cuda, on_cpu = student(model_dir, "cuda"), student(model_dir, "cpu")
    trainers = []
    for seed in (7, 8):
        examples = random_examples(on_cpu.model, 10, seed=seed)
        cuda_stats = train_student(on_cuda, examples, config, random.Random(seed))
        cpu_stats = train_student(on_cpu, examples, config, random.Random(seed))
        trainers.append(fast_distillation._TRAINERS[on_cuda.model])
        assert cuda_stats.steps == cpu_stats.steps == 6
        assert cuda_stats.last_loss == pytest.approx(cpu_stats.last_loss, rel=1e-3)
    assert trainers[0] is trainers[1]
    assert any(step.graph is not None for step in trainers[0]._steps.values())
    for on_gpu, reference in zip(adapter_weights(on_cuda), adapter_weights(on_cpu), strict=True):
        torch.testing.assert_close(on_gpu.cpu(), reference, rtol=1e-3, atol=1e-4)
