"""The fast greedy decoder gives exactly the tokens of `model.generate(do_sample=False)`:
random left-padded prompts, batch sizes 1/3/8, with and without a LoRA adapter, EOS
stopping, reused (bucketed) state, and on CUDA the CUDA-graph path. The faster distillation
steps give the reference step's losses and updates."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
from tiny_model import build_talking_tiny_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from parametric_memory.engine import fast_generation, generation
from parametric_memory.engine.fast_distillation import (
    GraphedStudentTrainer,
    capturable_adamw,
    collate,
    length_bucketed_batches,
    train_step,
)
from parametric_memory.engine.fast_generation import (
    batch_bucket,
    greedy_generate,
    release_graphs,
    supports_fast_decode,
)
from parametric_memory.engine.models import LoadedModel
from parametric_memory.engine.row_adapters import AdapterBank
from parametric_memory.losses import topk_kl_loss
from parametric_memory.method.distillation import answer_logits
from parametric_memory.records import Example, TransferItem

PAD = 2
NEW_TOKENS = 20
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_talking_tiny_model(tmp_path_factory.mktemp("talking-tiny"))


def load(model_dir, device: str = "cpu", dtype=torch.float32, attention: str = "sdpa"):
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=dtype, attn_implementation=attention
    )
    return model.to(device).eval()


def with_lora(model):
    # init_lora_weights=False: random B as well as A, so the adapter changes the outputs.
    lora = LoraConfig(r=4, target_modules=ALL_PROJECTIONS, init_lora_weights=False)
    torch.manual_seed(1)
    return get_peft_model(model, lora).eval()


def random_prompts(rows: int, seed: int, vocab: int, device: str = "cpu"):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 40, (rows,), generator=generator).tolist()
    width = max(lengths)
    ids = torch.full((rows, width), PAD)
    mask = torch.zeros((rows, width), dtype=torch.long)
    for row, length in enumerate(lengths):
        ids[row, width - length :] = torch.randint(3, vocab, (length,), generator=generator)
        mask[row, width - length :] = 1
    return ids.to(device), mask.to(device)


def reference(model, ids, mask, eos, new_tokens: int = NEW_TOKENS, **more) -> torch.Tensor:
    with torch.inference_mode():
        return model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=PAD,
            eos_token_id=eos,
            **more,
        )


def frequent_tokens(model, count: int) -> list[int]:
    """Tokens the model emits often: as end tokens they stop rows at different steps."""
    ids, mask = random_prompts(8, 99, model.config.vocab_size, model.device.type)
    generated = reference(model, ids, mask, None)[:, ids.shape[1] :].flatten()
    return torch.bincount(generated).topk(count).indices.tolist()


def assert_same_as_generate(
    model, ids, mask, eos, static_shapes=None, new_tokens=NEW_TOKENS, compile_step=False
):
    expected = reference(model, ids, mask, eos, new_tokens)
    actual = greedy_generate(
        model,
        ids,
        mask,
        new_tokens,
        eos_token_id=eos,
        pad_token_id=PAD,
        static_shapes=static_shapes,
        compile_step=compile_step,
    )
    assert actual.shape == expected.shape
    assert torch.equal(actual, expected)
    return actual


@pytest.mark.parametrize("rows", [1, 3, 8])
@pytest.mark.parametrize("adapter", ["none", "lora", "lora disabled"])
def test_same_tokens_as_generate(model_dir, rows, adapter):
    model = load(model_dir)
    eos = frequent_tokens(model, 1)[0]
    if adapter != "none":
        model = with_lora(model)
    ids, mask = random_prompts(rows, seed=rows, vocab=model.config.vocab_size)
    if adapter == "lora disabled":
        with model.disable_adapter():
            assert_same_as_generate(model, ids, mask, eos)
    else:
        assert_same_as_generate(model, ids, mask, eos)


def test_stops_where_generate_stops_and_pads_finished_rows(model_dir):
    model = load(model_dir)
    ids, mask = random_prompts(8, seed=5, vocab=model.config.vocab_size)
    free_running = reference(model, ids, mask, None, new_tokens=40)[:, ids.shape[1] :]
    # Each row's 4th token ends it: rows stop at different steps, all within 40.
    stops = sorted(set(free_running[:, 3].tolist()))
    out = assert_same_as_generate(model, ids, mask, stops, new_tokens=40)
    generated = out[:, ids.shape[1] :]
    assert generated.shape[1] <= 4
    finished_at = [next(i for i, t in enumerate(row) if t in stops) for row in generated.tolist()]
    assert len(set(finished_at)) > 1, "rows should stop at different steps"
    for row, step in zip(generated.tolist(), finished_at, strict=True):
        assert all(token == PAD for token in row[step + 1 :])


@pytest.mark.parametrize("new_tokens", [1, 2, 9])
def test_short_generations_and_no_end_token(model_dir, new_tokens):
    model = load(model_dir)
    ids, mask = random_prompts(3, seed=7, vocab=model.config.vocab_size)
    assert_same_as_generate(model, ids, mask, None, new_tokens=new_tokens)


def test_eager_attention(model_dir):
    model = load(model_dir, attention="eager")
    ids, mask = random_prompts(3, seed=11, vocab=model.config.vocab_size)
    assert_same_as_generate(model, ids, mask, frequent_tokens(model, 1))


def test_reused_bucketed_state_across_batches_and_adapter_switches(model_dir):
    """The code path CUDA takes (batch padded to a power of two, cache length bucketed,
    state reused between calls, one runner per adapter state), run eagerly on the CPU."""
    model = with_lora(load(model_dir))
    eos = frequent_tokens(model, 1)
    for seed, rows in enumerate([3, 4, 2, 3]):
        ids, mask = random_prompts(rows, seed=20 + seed, vocab=model.config.vocab_size)
        assert_same_as_generate(model, ids, mask, eos, static_shapes=True)
        with model.disable_adapter():
            assert_same_as_generate(model, ids, mask, eos, static_shapes=True)
    release_graphs(model)


def test_unsupported_settings_are_reported(model_dir):
    model = load(model_dir)
    assert supports_fast_decode(model)
    assert supports_fast_decode(with_lora(model))
    model.generation_config.repetition_penalty = 1.3
    assert not supports_fast_decode(model)
    assert not supports_fast_decode(load(model_dir).train())


def test_generation_generate_is_unchanged_by_the_fast_path(model_dir, monkeypatch):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lm = LoadedModel(with_lora(load(model_dir)), tokenizer, "tiny", "x")
    users = ["What is Brindlewick?", "Tell me.", "The quick brown fox jumps over the dog."]
    monkeypatch.setattr(generation, "_use_fast_decode", lambda lm: False)
    expected = generation.generate(lm, users, 12, batch_size=2)
    monkeypatch.setattr(generation, "_use_fast_decode", lambda lm: True)
    assert generation.generate(lm, users, 12, batch_size=2) == expected


def compiled_frames() -> int:
    return torch._dynamo.utils.counters["frames"]["ok"]


def test_compiled_step_matches_generate(model_dir):
    """The step compiled once per batch and cache-length bucket, then reused: on a CPU the
    compiled forward runs at every step, so every token comes from it."""
    model = with_lora(load(model_dir))
    eos = frequent_tokens(model, 1)
    before = compiled_frames()
    for seed, rows in enumerate([3, 4, 3]):  # one batch bucket (4), one cache length
        ids, mask = random_prompts(rows, seed=70 + seed, vocab=model.config.vocab_size)
        assert_same_as_generate(model, ids, mask, eos, static_shapes=True, compile_step=True)
    assert compiled_frames() == before + 1
    release_graphs(model)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_cuda_graph_matches_generate(model_dir):
    model = load(model_dir, device="cuda")
    eos = frequent_tokens(model, 1)
    before = compiled_frames()
    for seed, rows in enumerate([5, 8]):
        ids, mask = random_prompts(rows, seed=80 + seed, vocab=model.config.vocab_size)
        assert_same_as_generate(model, ids.cuda(), mask.cuda(), eos, compile_step=True)
    runners = list(fast_generation._RUNNERS[model].values())
    assert len(runners) == 1 and runners[0].graph is not None
    assert compiled_frames() > before
    release_graphs(model)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_path_matches_generate(model_dir):
    """float32: token-identical to `generate`, through captured graphs reused across
    batches and adapter switches (graphs are keyed by adapter state)."""
    model = with_lora(load(model_dir, device="cuda"))
    eos = frequent_tokens(model, 1)
    for seed, rows in enumerate([3, 8, 5, 1]):
        ids, mask = random_prompts(rows, seed=40 + seed, vocab=model.config.vocab_size)
        ids, mask = ids.cuda(), mask.cuda()
        assert_same_as_generate(model, ids, mask, eos)
        with model.disable_adapter():
            assert_same_as_generate(model, ids, mask, eos)
        runners = fast_generation._RUNNERS[model].values()
        assert runners and all(runner.graph is not None for runner in runners)
    with torch.no_grad():  # an in-place weight update is seen by the captured graphs
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.mul_(-1.5)
    ids, mask = random_prompts(5, seed=60, vocab=model.config.vocab_size)
    assert_same_as_generate(model, ids.cuda(), mask.cuda(), eos)
    release_graphs(model)


def random_adapters(model, count: int) -> list[dict[str, torch.Tensor]]:
    """Saved adapters of `model`'s shape with random weights (peft's saved keys)."""
    keys = get_peft_model_state_dict(model)
    generator = torch.Generator().manual_seed(count)
    return [
        {key: torch.randn(t.shape, generator=generator) * 0.2 for key, t in keys.items()}
        for _ in range(count)
    ]


def per_row_batches(model, device: str):
    """Batches whose rows each use their own sum of saved adapters, with end tokens."""
    states = random_adapters(model, 3)
    bank = AdapterBank(model, states.__getitem__, budget=1 << 24)
    eos = frequent_tokens(model, 1)
    choices = [
        [[(0, 1.0)], [(2, 1.0)], [(1, 1.0)]],
        [[(2, 1.0)], [(0, 0.6), (1, 0.5)], [], [(1, 1.0)]],
        [[(1, 1.0)], [(0, 1.0)], [(0, 1.0)]],
    ]
    for seed, rows in enumerate(choices):
        ids, mask = random_prompts(len(rows), seed=90 + seed, vocab=model.config.vocab_size)
        yield bank, rows, ids.to(device), mask.to(device), eos


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
        ),
    ],
)
def test_rows_with_their_own_adapters_decode_as_generate(model_dir, device):
    """Each row its own adapters (`row_adapters`), batches padded to their bucket: on CUDA
    one captured graph per batch shape replays every batch of it with that batch's
    adapters; on the CPU the same path runs eagerly."""
    model = with_lora(load(model_dir, device=device))
    for bank, rows, ids, mask, eos in per_row_batches(model, device):
        with bank.attached(rows, capacity=batch_bucket(len(rows))):
            assert_same_as_generate(model, ids, mask, eos, static_shapes=True)
    if device == "cuda":
        runners = list(fast_generation._RUNNERS[model].values())
        assert len(runners) <= 2 and all(runner.graph is not None for runner in runners)
    release_graphs(model)


def test_scores_are_the_log_probabilities_generate_gives(model_dir):
    model = with_lora(load(model_dir))
    for bank, rows, ids, mask, eos in per_row_batches(model, "cpu"):
        with bank.attached(rows, capacity=batch_bucket(len(rows))), torch.inference_mode():
            output, scores = greedy_generate(
                model,
                ids,
                mask,
                NEW_TOKENS,
                eos_token_id=eos,
                pad_token_id=PAD,
                static_shapes=True,
                with_scores=True,
            )
            expected = reference(
                model, ids, mask, eos, output_logits=True, return_dict_in_generate=True
            )
        tokens = expected.sequences[:, ids.shape[1] :]
        assert torch.equal(output[:, ids.shape[1] :], tokens)
        logits = torch.stack(expected.logits, dim=1).float().log_softmax(-1)
        chosen = logits.gather(-1, tokens[..., None]).squeeze(-1)
        torch.testing.assert_close(scores, chosen, atol=1e-4, rtol=1e-4)
    release_graphs(model)


# The faster distillation step (fast_distillation): same loss and updates as the reference.


def random_examples(model, count: int, seed: int) -> list:
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    vocab, examples = model.config.vocab_size, []
    for _ in range(count):
        length = rng.randint(6, 40)
        answer = rng.randint(1, length - 2)
        ids = [rng.randrange(3, vocab) for _ in range(length)]
        example = Example(TransferItem("c", "entity", "", ""), ids, [], [], answer)
        logprobs = torch.log_softmax(torch.randn(answer, 9, generator=generator), -1)
        example.topk_ids = torch.randint(0, vocab, (answer, 8), generator=generator)
        example.topk_logprobs = logprobs[:, :-1].contiguous()
        examples.append(example)
    return examples


def reference_step(model, optimizer, params, batch) -> float:
    """`consolidate.train_student`'s step, as of this commit."""
    lens = [e.answer_len for e in batch]
    logits, mask = answer_logits(model, [e.student_ids for e in batch], lens, PAD)
    longest, k = max(lens), batch[0].topk_ids.shape[-1]
    ids = torch.zeros((len(batch), longest, k), dtype=torch.long)
    logprobs = torch.zeros((len(batch), longest, k))
    for row, example in enumerate(batch):
        ids[row, : example.answer_len] = example.topk_ids
        logprobs[row, : example.answer_len] = example.topk_logprobs
    loss = topk_kl_loss(logits, ids.to(logits.device), logprobs.to(logits.device), mask)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    return float(loss.detach())


def student_pair(model_dir, device: str = "cpu"):
    """Two identical LoRA students, each with its AdamW."""
    students = []
    for _ in range(2):
        student = with_lora(load(model_dir, device=device)).train()
        params = [p for p in student.parameters() if p.requires_grad]
        students.append((student, params))
    return students


@pytest.mark.parametrize("trainer", ["train_step", "graphed"])
def test_fast_distillation_step_matches_the_reference_step(model_dir, trainer):
    (reference, ref_params), (fast, fast_params) = student_pair(model_dir)
    ref_optimizer = torch.optim.AdamW(ref_params, lr=1e-2, weight_decay=0.0)
    fast_optimizer = capturable_adamw(fast_params, 1e-2, torch.device("cpu"))
    graphed = GraphedStudentTrainer(fast, fast_optimizer, fast_params, 1.0, rows=4, pad_id=PAD)
    examples = random_examples(reference, 11, seed=3)
    for batch in [examples[:4], examples[4:7], examples[7:]]:  # partial batches included
        expected = reference_step(reference, ref_optimizer, ref_params, batch)
        if trainer == "graphed":
            actual = float(graphed.step(batch)[0])
        else:
            collated = collate(batch, PAD, torch.device("cpu"))
            actual = float(train_step(fast, fast_optimizer, fast_params, collated, 1.0))
        assert actual == pytest.approx(expected, rel=1e-4)
    for ref_param, fast_param in zip(ref_params, fast_params, strict=True):
        torch.testing.assert_close(fast_param, ref_param, rtol=1e-4, atol=1e-5)


def test_length_bucketed_batches_keep_every_example_once():
    model = type("M", (), {"config": type("C", (), {"vocab_size": 50})()})()
    examples = random_examples(model, 23, seed=4)
    groups = length_bucketed_batches(examples, 5, random.Random(0))
    assert sorted(id(e) for g in groups for e in g) == sorted(id(e) for e in examples)
    spread = [
        max(len(e.student_ids) for e in g) - min(len(e.student_ids) for e in g) for g in groups
    ]
    assert sum(spread) < 40


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graphed_distillation_step_on_cuda(model_dir):
    """float32: replayed graphs (three shapes, so captures mid-training) train like eager
    reference steps."""
    (reference, ref_params), (fast, fast_params) = student_pair(model_dir, "cuda")
    ref_optimizer = torch.optim.AdamW(ref_params, lr=1e-2, weight_decay=0.0, fused=True)
    fast_optimizer = capturable_adamw(fast_params, 1e-2, torch.device("cuda"))
    schedule = torch.optim.lr_scheduler.LambdaLR(fast_optimizer, lambda step: 1.0 / (1 + step))
    ref_schedule = torch.optim.lr_scheduler.LambdaLR(ref_optimizer, lambda step: 1.0 / (1 + step))
    graphed = GraphedStudentTrainer(fast, fast_optimizer, fast_params, 1.0, rows=4, pad_id=PAD)
    examples = random_examples(reference, 16, seed=5)
    examples.sort(key=lambda e: len(e.student_ids))
    for batch in [examples[:4], examples[12:], examples[4:8], examples[8:12], examples[:4]]:
        expected = reference_step(reference, ref_optimizer, ref_params, batch)
        actual = float(graphed.step(batch)[0])
        assert actual == pytest.approx(expected, rel=1e-3)
        schedule.step()
        ref_schedule.step()
    assert any(step.graph is not None for step in graphed._steps.values())
    for ref_param, fast_param in zip(ref_params, fast_params, strict=True):
        torch.testing.assert_close(fast_param, ref_param, rtol=1e-3, atol=1e-4)


@given(st.integers(min_value=1, max_value=1 << 20))
def test_a_cache_bucket_holds_what_is_needed_and_less_than_half_more(needed):
    bucket = fast_generation._length_bucket(needed)
    assert bucket >= max(needed, fast_generation._MIN_CACHE_LENGTH)
    assert bucket == fast_generation._MIN_CACHE_LENGTH or 2 * bucket < 3 * needed
