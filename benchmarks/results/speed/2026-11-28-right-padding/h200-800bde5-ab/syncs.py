"""Every host-device sync in slot training steps, with the Python lines that caused it (tiny
model, CUDA). As run, it counted every warning raised during the steps, not only sync
warnings: its two lines in the run were a FutureWarning from loading and one without stack."""

import random
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

sys.path.insert(0, "tests")
import torch
from test_consolidate import student
from test_fast_generation import random_examples
from tiny_model import build_talking_tiny_model

from parametric_memory.config import ConsolidationConfig
from parametric_memory.engine.adapter_slots import AdapterSlots
from parametric_memory.engine.slot_training import _train_steps
from parametric_memory.schedule import training_batches

seen = {}


def show(message, category, filename, lineno, file=None, line=None):
    ours = ("parametric_memory", "transformers", "peft")
    stack = [f for f in traceback.extract_stack()[:-1] if any(o in f.filename for o in ours)]
    key = tuple((f.filename.split("/")[-1], f.lineno) for f in stack[-3:])
    seen[key] = seen.get(key, 0) + 1


warnings.showwarning = show
warnings.simplefilter("always")
config = ConsolidationConfig(epochs=2, batch_size=3, learning_rate=1e-2)
lm = student(build_talking_tiny_model(Path(tempfile.mkdtemp())), "cuda")
documents = [random_examples(lm.model, n, seed=s) for n, s in ((5, 1), (3, 2))]
plans = [training_batches(d, config, random.Random(i)) for i, d in enumerate(documents)]
slots = AdapterSlots(lm, 2)
with slots.attached():
    lm.model.train()
    _train_steps(lm, slots, plans, config)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    _train_steps(lm, slots, plans, config)
    torch.cuda.set_sync_debug_mode("default")
print("syncs in two epochs of steps:", sum(seen.values()))
for key, count in sorted(seen.items(), key=lambda kv: -kv[1]):
    print(count, key)
