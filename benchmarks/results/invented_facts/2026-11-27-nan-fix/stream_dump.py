"""Stream the first N invented-facts documents into one memory, ask every question, and
save the answers and the memory's records (the script behind this folder's runs).

    OUT=/tmp/out PYTHONPATH=src python stream_dump.py fast 12
"""

import json
import logging
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, "benchmarks")
from common import ask_memory, load_documents

from parametric_memory import MemoryConfig, ParametricMemory

logging.basicConfig(level=logging.WARNING)
logging.getLogger("parametric_memory").setLevel(logging.DEBUG)  # losses per transformation
label, count = sys.argv[1], int(sys.argv[2])
documents = load_documents("benchmarks/data/invented_facts.jsonl")[:count]
root = Path(f"/root/mem-{label}")
shutil.rmtree(root, ignore_errors=True)
memory = ParametricMemory.create(root, MemoryConfig())
for document in documents:
    memory.add_documents([document["text"]], ids=[document["id"]], progress=False)
questions = [(d["id"], q) for d in documents for q in d["questions"]]
answers = ask_memory(memory, [q["question"] for _, q in questions])
out = Path(os.environ["OUT"]) / label
out.mkdir(parents=True, exist_ok=True)
records = [
    {"doc": doc, "q": q["question"], "gold": q["answer"], "a": answer}
    for (doc, q), answer in zip(questions, answers, strict=True)
]
(out / "answers.json").write_text(json.dumps(records, indent=1))
shutil.copy(root / "manifest.json", out)
state = json.loads((root / "manifest.json").read_text())["state"]
for records_file in (root / state).glob("*.jsonl"):
    shutil.copy(records_file, out)
