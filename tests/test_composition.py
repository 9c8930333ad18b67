"""Top-k composition: each row of a batch answered with its own weighted sum of shards'
LoRA updates (`engine/row_adapters.py`), and the memory routing a question to several
shards (`RoutingConfig`, `shards_per_question`)."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
from transformers import LlamaConfig, LlamaForCausalLM

from parametric_memory import InvalidArgumentError, MemoryConfig, ParametricMemory
from parametric_memory.engine.row_adapters import AdapterBank
from parametric_memory.routing import ShardRouter, composition_weights

MLP = ["gate_proj", "up_proj", "down_proj"]


def peft_model():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    base = LlamaForCausalLM(config).requires_grad_(False)
    lora = LoraConfig(r=2, lora_alpha=32, target_modules=MLP, init_lora_weights=False)
    return get_peft_model(base, lora).eval()


def random_state(model, seed: int) -> dict[str, torch.Tensor]:
    """A saved adapter of the model's shape with random weights (peft's saved keys)."""
    generator = torch.Generator().manual_seed(seed)
    state = get_peft_model_state_dict(model)
    return {key: torch.randn(t.shape, generator=generator) * 0.3 for key, t in state.items()}


def attached(model, rows, capacity: int = 0, budget: int = 1 << 20):
    """`rows` of (state dict, weight) on each row of `model`, through a bank that loads the
    state dicts by their position in `rows`."""
    states = [state for row in rows for state, _ in row]
    keyed, position = [], 0
    for row in rows:
        keyed.append([(position + i, weight) for i, (_, weight) in enumerate(row)])
        position += len(row)
    return AdapterBank(model, states.__getitem__, budget).attached(keyed, capacity)


def logits_with(model, ids, state) -> torch.Tensor:
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, state)
    with torch.no_grad():
        return model(input_ids=ids).logits


def merged_logits(model, ids, weighted) -> torch.Tensor:
    """The base model with sum_i w_i * scaling * B_i A_i added to each adapted weight."""
    with torch.no_grad(), model.disable_adapter():
        saved = {}
        for name, module in model.named_modules():
            if not hasattr(module, "lora_A"):
                continue
            weight = module.get_base_layer().weight
            saved[name] = weight.clone()
            for state, w in weighted:
                a, b = state[f"{name}.lora_A.weight"], state[f"{name}.lora_B.weight"]
                weight += w * module.scaling["default"] * (b @ a)
        logits = model(input_ids=ids).logits
        for name, module in model.named_modules():
            if name in saved:
                module.get_base_layer().weight.copy_(saved[name])
    return logits


def test_each_row_computes_with_its_own_adapter():
    model = peft_model()
    first, second = random_state(model, 1), random_state(model, 2)
    ids = torch.randint(0, 96, (2, 7))
    expected = torch.stack(
        [logits_with(model, ids[:1], first)[0], logits_with(model, ids[1:], second)[0]]
    )
    with attached(model, [[(first, 1.0)], [(second, 1.0)]]), torch.no_grad():
        got = model(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_a_row_of_several_adapters_computes_their_weighted_sum():
    model = peft_model()
    first, second = random_state(model, 1), random_state(model, 2)
    ids = torch.randint(0, 96, (1, 9))
    weighted = [(first, 0.7), (second, 0.4)]
    expected = merged_logits(model, ids, weighted)
    with attached(model, [weighted]), torch.no_grad():
        got = model(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_a_row_without_adapters_is_the_base_model_and_the_layers_come_back():
    model = peft_model()
    first = random_state(model, 1)
    ids = torch.randint(0, 96, (2, 5))
    with torch.no_grad(), model.disable_adapter():
        base = model(input_ids=ids).logits
    own = logits_with(model, ids, first)
    with attached(model, [[], [(first, 1.0)]]), torch.no_grad():
        got = model(input_ids=ids).logits
    torch.testing.assert_close(got[0], base[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got[1], own[1], atol=1e-4, rtol=1e-4)
    with torch.no_grad():  # detached: the model's own adapter again
        torch.testing.assert_close(model(input_ids=ids).logits, own)


def test_rows_without_adapters_on_a_bank_that_loaded_none_are_the_base_model():
    model = peft_model()
    ids = torch.randint(0, 96, (2, 5))
    with torch.no_grad(), model.disable_adapter():
        base = model(input_ids=ids).logits
    with attached(model, [[], []]), torch.no_grad():  # a memory that holds nothing yet
        got = model(input_ids=ids).logits
    torch.testing.assert_close(got, base, atol=1e-4, rtol=1e-4)


def test_a_memory_holding_nothing_answers_a_lone_question(tmp_path, tiny_config):
    memory = ParametricMemory.create(tmp_path / "m", tiny_config)
    assert isinstance(memory.ask_batch(["Who runs payroll?"], max_new_tokens=3)[0], str)


def test_row_adapters_do_not_stack_on_another_override():
    model = peft_model()
    rows = [[(random_state(model, 1), 1.0)]]
    with (
        attached(model, rows),
        pytest.raises(RuntimeError, match="another forward"),
        attached(model, rows),
    ):
        pass


def test_an_adapter_of_another_shape_is_refused():
    model = peft_model()
    state = random_state(model, 1)
    state.pop(next(iter(state)))
    with pytest.raises(KeyError, match="lacks"), attached(model, [[(state, 1.0)]]):
        pass


def test_rows_past_the_batch_get_no_update_and_each_shape_keeps_its_buffers():
    """Room for more rows than given (the fast decoder pads a batch to its bucket): the rows
    given compute as without the room, and the next batch of that shape reads the same
    buffers (what a captured decode graph reads)."""
    model = peft_model()
    first, second = random_state(model, 1), random_state(model, 2)
    ids = torch.randint(0, 96, (2, 6))
    bank = AdapterBank(model, [first, second].__getitem__, budget=1 << 20)
    keys = []
    for rows in ([[(0, 1.0)], [(1, 1.0)]], [[(1, 1.0)], [(0, 0.5)]]):
        with bank.attached(rows, capacity=4), torch.no_grad():
            padded = model(input_ids=torch.cat([ids, ids])).logits
            keys.append(
                [vars(m)["forward"].graph_key for m in model.modules() if "forward" in vars(m)]
            )
        states = [first, second]
        expected = attached(model, [[(states[k], w)] for ((k, w),) in rows])
        with expected, torch.no_grad():
            torch.testing.assert_close(padded[:2], model(input_ids=ids).logits)
    with torch.no_grad(), model.disable_adapter():
        base = model(input_ids=ids).logits
    torch.testing.assert_close(padded[2:], base, atol=1e-5, rtol=1e-5)
    assert keys[0] == keys[1]


def test_the_bank_holds_its_budget_least_recently_used_out_and_reloads_what_went():
    model = peft_model()
    states = [random_state(model, seed) for seed in range(3)]
    loads = []

    def load(key: int):
        loads.append(key)
        return states[key]

    probe = AdapterBank(model, load, budget=1 << 20)
    per_adapter = (1 << 20) // probe.slots
    bank = AdapterBank(model, load, budget=2 * per_adapter)  # two adapters
    assert bank.slots == 2
    ids = torch.randint(0, 96, (1, 5))
    for key in (0, 1, 0, 2, 1):  # 2 pushes out 1 (0 was used since); 1 pushes out 0
        with bank.attached([[(key, 1.0)]]), torch.no_grad():
            got = model(input_ids=ids).logits
        torch.testing.assert_close(got, logits_with(model, ids, states[key]), atol=1e-4, rtol=1e-4)
    assert loads == [0, 1, 2, 1]
    with (
        pytest.raises(ValueError, match="bank holds 2"),
        bank.attached([[(0, 1.0), (1, 1.0), (2, 1.0)]]),
    ):
        pass


def test_composition_weights_are_relative_to_the_best_score_or_equal():
    ranked = [(4, 8.0), (1, 2.0)]
    assert composition_weights(ranked, "relative") == [(4, 1.0), (1, 0.25)]
    assert composition_weights(ranked, "equal") == [(4, 1.0), (1, 1.0)]
    assert composition_weights([(3, 0.0)], "relative") == [(3, 1.0)]


def _chunks(texts: dict[str, str]):
    from parametric_memory.records import Chunk

    return [
        Chunk(id=f"{doc}-0", document_id=doc, index=0, text=text, tokens=len(text.split()))
        for doc, text in texts.items()
    ]


def test_the_router_ranks_distinct_shards_best_first():
    texts = {
        "kelp": "Marrow Bay harvests violet kelp each October with copper rakes.",
        "festival": "The Zorbian lantern festival is held every May in Orsk.",
        "bridge": "The Tarrow Bridge spans the Kessel River; kelp boats pass under it.",
    }
    router = ShardRouter(_chunks(texts), {"kelp": 0, "festival": 1, "bridge": 2})
    ranked = router.ranked_shards(["When is violet kelp harvested?", "Orsk festival"], 2)
    assert [shard for shard, _ in ranked[0]] == [0, 2]
    assert ranked[0][0][1] > ranked[0][1][1] > 0
    assert [shard for shard, _ in ranked[1]] == [1]  # no other shard shares a word
    assert router.ranked_shards(["zzz qqq"], 3) == [[(2, 0.0)]]  # the newest shard


FACTS = {
    "lanterns": "The Quillhaven lantern festival is held every May 14.",
    "payroll": "Payroll at Brindlewick is run by Odo Brask from the Orsk Hollow office.",
}


@pytest.fixture
def two_shards(tmp_path, tiny_config) -> ParametricMemory:
    memory = ParametricMemory.create(tmp_path / "m", tiny_config)
    memory.add_documents(list(FACTS.values()), ids=list(FACTS), progress=False)
    return memory


def test_one_shard_composed_answers_as_the_shard_alone(tmp_path, tiny_config):
    memory = ParametricMemory.create(tmp_path / "m", tiny_config)
    memory.add_documents([FACTS["lanterns"]], ids=["lanterns"], progress=False)
    questions = ["When is the lantern festival?", "Who lit the first lantern?"]
    alone = memory.ask_batch(questions, max_new_tokens=6)
    composed = memory.ask_batch(questions, max_new_tokens=6, shards_per_question=3)
    assert composed == alone


def test_questions_draw_on_several_shards_in_one_batch(two_shards):
    questions = ["Who runs payroll at the lantern festival office?", "When is the festival?"]
    answers = two_shards.ask_batch(questions, max_new_tokens=6, shards_per_question=2)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    streamed = "".join(two_shards.stream(questions[0], max_new_tokens=6, shards_per_question=2))
    assert streamed.strip() == answers[0]


def test_the_memory_config_sets_the_default_shards_per_question(tmp_path, tiny_config):
    config = tiny_config.model_copy(
        update={"routing": tiny_config.routing.model_copy(update={"shards_per_question": 2})}
    )
    memory = ParametricMemory.create(tmp_path / "m", config)
    memory.add_documents(list(FACTS.values()), ids=list(FACTS), progress=False)
    question = ["Who runs payroll at the lantern festival office?"]
    reopened = ParametricMemory.open(memory.root)
    assert reopened.config.routing.shards_per_question == 2
    assert reopened.ask_batch(question, max_new_tokens=6) == reopened.ask_batch(
        question, max_new_tokens=6, shards_per_question=2
    )


@pytest.mark.parametrize("bad", [0, 17, True, "2", 1.5])
def test_a_bad_shards_per_question_is_refused_in_one_line(two_shards, bad):
    with pytest.raises(InvalidArgumentError, match="shards_per_question"):
        two_shards.ask("When is the festival?", shards_per_question=bad)


def test_routing_config_bounds():
    with pytest.raises(ValueError):
        MemoryConfig(routing={"shards_per_question": 0})
    with pytest.raises(ValueError):
        MemoryConfig(routing={"weights": "softmax"})


def test_composed_answers_read_each_shard_file_once(two_shards, monkeypatch):
    reads = []
    read = ParametricMemory._read_weights

    def counted(path):
        reads.append(path)
        return read(path)

    monkeypatch.setattr(ParametricMemory, "_read_weights", staticmethod(counted))
    questions = ["Who runs payroll at the lantern festival office?", "When is the festival?"]
    first = two_shards.ask_batch(questions, max_new_tokens=4, shards_per_question=2)
    again = two_shards.ask_batch(questions, max_new_tokens=4, shards_per_question=2)
    assert first == again
    assert len(reads) == len(set(reads)) == 2


def test_many_adapters_of_mixed_dtypes_load_together_each_in_its_own_slot():
    """More adapters than one load group (64), stored in float32 and bfloat16 alike."""
    model = peft_model()
    states = [random_state(model, seed) for seed in range(70)]
    states[3] = {key: t.to(torch.bfloat16) for key, t in states[3].items()}
    bank = AdapterBank(model, states.__getitem__, budget=1 << 22)
    bank.load(range(70))
    ids = torch.randint(0, 96, (4, 5))
    picked = [0, 3, 64, 69]
    with bank.attached([[(key, 1.0)] for key in picked]), torch.no_grad():
        got = model(input_ids=ids).logits
    for row, key in enumerate(picked):
        expected = logits_with(model, ids[row : row + 1], states[key])[0]
        torch.testing.assert_close(got[row], expected, atol=1e-4, rtol=1e-4)
