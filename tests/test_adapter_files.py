"""A slot written straight from the stacked adapter is the folder `save_pretrained` writes
after `copy_to_adapter(slot)`: the same config bytes, keys and tensors, loadable by peft."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from peft.utils import CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME
from safetensors.torch import load_file, save
from test_consolidate import CUDA, student
from test_fast_generation import load, model_dir  # noqa: F401

from parametric_memory.engine.adapter_files import adapter_config_json, write_adapters
from parametric_memory.engine.adapter_slots import AdapterSlots


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_written_slots_equal_what_save_pretrained_writes(model_dir, tmp_path, device):  # noqa: F811
    lm = student(model_dir, device)
    slots = AdapterSlots(lm, 3)
    with torch.no_grad():
        slots.weights.normal_(std=0.1)  # every slot different, B no longer zero
    write_adapters(
        [tmp_path / f"fast-{slot}" for slot in range(3)], adapter_config_json(lm.model), slots
    )
    for slot in range(3):
        slots.copy_to_adapter(slot)
        lm.model.save_pretrained(tmp_path / f"peft-{slot}")
    for slot in range(3):
        fast, peft = tmp_path / f"fast-{slot}", tmp_path / f"peft-{slot}"
        assert (fast / CONFIG_NAME).read_bytes() == (peft / CONFIG_NAME).read_bytes()
        written = load_file(fast / SAFETENSORS_WEIGHTS_NAME)
        expected = load_file(peft / SAFETENSORS_WEIGHTS_NAME)
        assert written.keys() == expected.keys() and len(written) == 2 * len(slots._layers)
        assert all(torch.equal(written[key], expected[key]) for key in expected)
    first = load_file(tmp_path / "fast-0" / SAFETENSORS_WEIGHTS_NAME)
    assert any(not torch.equal(written[key], first[key]) for key in first)  # slots differ


def test_a_written_slot_loads_into_peft(model_dir, tmp_path):  # noqa: F811
    lm = student(model_dir)
    slots = AdapterSlots(lm, 2)
    with torch.no_grad():
        slots.weights.normal_(std=0.1)
    folders = [tmp_path / "a", tmp_path / "b"]
    write_adapters(folders, adapter_config_json(lm.model), slots)
    loaded = PeftModel.from_pretrained(load(model_dir, "cpu"), folders[1])
    slots.copy_to_adapter(1)
    ids = torch.tensor([[3, 14, 15, 92, 65]])
    torch.testing.assert_close(loaded(input_ids=ids).logits, lm.model(input_ids=ids).logits)


def test_every_slot_file_is_byte_for_byte_what_safetensors_writes(model_dir, tmp_path):  # noqa: F811
    lm = student(model_dir)
    slots = AdapterSlots(lm, 18)  # more than one host copy of slots
    with torch.no_grad():
        slots.weights.normal_(std=0.1)
    folders = [tmp_path / f"s{slot}" for slot in range(18)]
    write_adapters(folders, adapter_config_json(lm.model), slots)
    for slot in (0, 15, 16, 17):
        written = (folders[slot] / SAFETENSORS_WEIGHTS_NAME).read_bytes()
        assert written == save(slots.state_dict(slot), metadata={"format": "pt"})


def test_writing_slots_needs_a_folder_for_each(model_dir, tmp_path):  # noqa: F811
    lm = student(model_dir)
    with pytest.raises(ValueError, match="2 slots need as many folders"):
        write_adapters([tmp_path / "a"], adapter_config_json(lm.model), AdapterSlots(lm, 2))
    assert not (tmp_path / "a").exists()
