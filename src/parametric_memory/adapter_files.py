"""Adapter folders as peft's `save_pretrained` writes them (`adapter_config.json` and
`adapter_model.safetensors`: the same keys, tensors and metadata), for many adapters of one
model at a time. Per call `save_pretrained` rebuilds the state dict through peft's key
analysis and renders a model card; here the config is rendered once, the slots come to the
host in one copy and each shard is one `save_file` (the model card is left out). Writing 32
fresh shards of the default model on the 2-core CPU: 86-99 ms a shard before, 39-71 ms now
(`benchmarks/results/shard_writes/`), most of it the 20 MB file itself.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from peft.utils import CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME
from safetensors.torch import save_file
from torch import nn


def adapter_config_json(model: nn.Module) -> bytes:
    """What `model.save_pretrained` writes as its adapter config."""
    with tempfile.TemporaryDirectory(prefix="adapter-config-") as scratch:
        model.save_pretrained(scratch)
        return (Path(scratch) / CONFIG_NAME).read_bytes()


def write_adapter(folder: Path, config_json: bytes, tensors: dict[str, torch.Tensor]) -> None:
    """An adapter folder loadable by `PeftModel.from_pretrained` (and by the memory)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_bytes(config_json)
    save_file(tensors, str(folder / SAFETENSORS_WEIGHTS_NAME), metadata={"format": "pt"})
