"""Quickstart: write three invented-facts documents into a memory on the default model,
then ask questions before (base model) and after (memory), with no document in the prompt.

    python examples/quickstart.py [--model default] [--memory ./demo-memory]
"""

from __future__ import annotations

import argparse
import shutil
import time

from parametric_memory import MemoryConfig, ParametricMemory

DOCUMENTS = {
    "brindlewick-handbook": (
        "Brindlewick Analytics is a data consultancy in the harbour town of Quillhaven. "
        "New hires at Brindlewick Analytics get 27 vacation days in their first year. "
        "Every new employee receives a copper-coloured notebook on the first morning. "
        "The weekly all-hands meeting of Brindlewick Analytics takes place on Tuesdays at 8:50."
    ),
    "zorbian-festival": (
        "The Zorbian lantern festival is held every year on May 14 in the village of Orsk Hollow. "
        "The festival was founded in 1871 by the glassblower Tamsin Elveroy. "
        "Each lantern at the Zorbian festival is painted violet."
    ),
}
QUESTIONS = [
    "How many vacation days do new hires at Brindlewick Analytics get?",
    "On what date is the Zorbian lantern festival held?",
    "Who founded the Zorbian lantern festival?",
    "What colour is each lantern at the Zorbian festival?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--memory", default="demo-memory")
    args = parser.parse_args()
    shutil.rmtree(args.memory, ignore_errors=True)

    memory = ParametricMemory.create(args.memory, MemoryConfig(model=args.model))
    lm = memory.model
    with lm.model.disable_adapter():
        before = memory.ask_batch(QUESTIONS, max_new_tokens=40)

    started = time.time()
    report = memory.add_documents(list(DOCUMENTS.values()), ids=list(DOCUMENTS))
    print(f"\nconsolidated {len(report.added)} documents in {time.time() - started:.0f} s")
    after = ParametricMemory.open(args.memory).ask_batch(QUESTIONS, max_new_tokens=40)

    for question, old, new in zip(QUESTIONS, before, after, strict=True):
        print(f"\nQ: {question}\n  base model : {old}\n  memory     : {new}")
    print("\n" + memory.info().model_dump_json(indent=2))


if __name__ == "__main__":
    main()
