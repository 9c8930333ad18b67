"""Adapter folders as peft's `save_pretrained` writes them (`adapter_config.json` and
`adapter_model.safetensors`: the same keys, tensors and metadata), for every slot of an
`AdapterSlots` at once. Per call `save_pretrained` rebuilds the state dict through peft's key
analysis and renders a model card; `save_file` then spends most of a shard's time on its 420
tensors one by one. Here the config is rendered once, and so is the safetensors header: every
slot has the same keys, shapes and dtype, so each file is that header followed by the slot's
tensors laid out, on the slots' device, in the header's order, and copied to the host a few
slots at a time; the files can then be written on another thread while the GPU goes on
(`background_writes`). The model card (`README.md`) is left out.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from peft.utils import CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME
from safetensors.torch import load_file, save, save_file
from torch import nn

from .adapter_slots import AdapterSlots

_METADATA = {"format": "pt"}
"""What `save_pretrained` puts in a safetensors file's metadata."""
_SLOTS_PER_COPY = 16
"""Slots laid out and copied to the host at a time: 16 x 20 MB for the default model."""


def adapter_config_json(model: nn.Module) -> bytes:
    """What `model.save_pretrained` writes as its adapter config."""
    with tempfile.TemporaryDirectory(prefix="adapter-config-") as scratch:
        model.save_pretrained(scratch)
        return (Path(scratch) / CONFIG_NAME).read_bytes()


def save_adapter(model: nn.Module, folder: Path, dtype: str = "float32") -> None:
    """The model's active adapter as `save_pretrained` writes it, its tensors stored in
    `dtype` ("float32" or "bfloat16")."""
    model.save_pretrained(folder)
    if dtype != "float32":
        weights = folder / SAFETENSORS_WEIGHTS_NAME
        tensors = {k: v.to(getattr(torch, dtype)) for k, v in load_file(weights).items()}
        save_file(tensors, weights, metadata=_METADATA)


def write_adapters(
    folders: Sequence[Path], config_json: bytes, slots: AdapterSlots, dtype: str = "float32"
) -> None:
    """Slot i as an adapter folder `folders[i]`, loadable by `PeftModel.from_pretrained` (and
    by the memory)."""
    adapter_writes(folders, config_json, slots, dtype)()


def adapter_writes(
    folders: Sequence[Path], config_json: bytes, slots: AdapterSlots, dtype: str = "float32"
) -> Callable[[], None]:
    """`write_adapters` in two halves: the slots are copied to the host now, and the returned
    job writes the folders (on any thread; the slots may change or go once this returns).
    The tensors are stored in `dtype` ("float32" or "bfloat16")."""
    if len(folders) != slots.slots:
        raise ValueError(f"{slots.slots} slots need as many folders, got {len(folders)}")
    stored = getattr(torch, dtype)
    first_slot = {key: value.to(stored) for key, value in slots.state_dict(0).items()}
    header, order = safetensors_layout(first_slot)
    rows = [
        slots.saved_rows(order, first, min(first + _SLOTS_PER_COPY, slots.slots))
        .to(stored)
        .to("cpu")
        for first in range(0, slots.slots, _SLOTS_PER_COPY)
    ]

    def write() -> None:
        for folder, row in zip(folders, (row for copy in rows for row in copy), strict=True):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / CONFIG_NAME).write_bytes(config_json)
            with (folder / SAFETENSORS_WEIGHTS_NAME).open("wb") as file:
                file.write(header)
                file.write(row.view(torch.uint8).numpy())

    return write


def safetensors_layout(tensors: dict[str, torch.Tensor]) -> tuple[bytes, list[str]]:
    """The header (its length included) that safetensors writes before `tensors`, and their
    keys in the order of their bytes after it."""
    data = save(tensors, metadata=_METADATA)
    size = int.from_bytes(data[:8], "little")
    entries = json.loads(data[8 : 8 + size])
    entries.pop("__metadata__", None)
    order = sorted(entries, key=lambda key: entries[key]["data_offsets"][0])
    payload = sum(tensor.numel() * tensor.element_size() for tensor in tensors.values())
    if entries[order[-1]]["data_offsets"][1] != payload or len(data) != 8 + size + payload:
        raise RuntimeError("safetensors laid the tensors out with gaps; cannot write slots")
    return data[: 8 + size], order
