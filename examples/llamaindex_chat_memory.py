"""LlamaIndex chat with parametric long-term memory (`ParametricMemoryBlock`).

A `Memory` with a small token limit flushes its oldest turns to the memory block, which
queues them; `block.flush()` consolidates them into the adapter. A new session (empty
chat history) then gets the block's recollection of the question in its system message.
The chat engine's LLM is `ParametricMemoryLLM` (any LlamaIndex LLM works).

    python examples/llamaindex_chat_memory.py                       # real default model
    python examples/llamaindex_chat_memory.py --model PATH --fast   # tiny settings (tests)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.memory import Memory
from llama_index.llms.parametric_memory import ParametricMemoryLLM
from llama_index.memory.parametric_memory import ParametricMemoryBlock

from parametric_memory import MemoryConfig, ParametricMemory

TURNS = [
    "Please remember this: the Quillhaven lantern festival is held every May 14.",
    "Also, my favourite lantern colour is teal.",
]
QUESTION = "When is the Quillhaven lantern festival?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="base model (default: SmolLM2)")
    parser.add_argument("--fast", action="store_true", help="tiny settings (for tests)")
    parser.add_argument("--memory", type=Path, help="memory folder (default: a temp folder)")
    args = parser.parse_args()

    folder = args.memory or Path(tempfile.mkdtemp(prefix="llamaindex-chat-")) / "memory"
    config = MemoryConfig(model=args.model)
    if args.fast:
        config = MemoryConfig(
            model=args.model,
            elicitation={"max_answer_tokens": 8},
            consolidation={"epochs": 1},
        )
    memory = ParametricMemory.create(folder, config, exist_ok=True)
    block = ParametricMemoryBlock(memory=memory, max_new_tokens=64)
    llm = ParametricMemoryLLM(memory=memory, max_new_tokens=48)

    def session(session_id: str) -> SimpleChatEngine:
        chat_memory = Memory.from_defaults(
            session_id=session_id,
            token_limit=120,
            token_flush_size=40,
            chat_history_token_ratio=0.5,
            memory_blocks=[block],
        )
        return SimpleChatEngine.from_defaults(llm=llm, memory=chat_memory)

    first = session("session-1")
    for turn in TURNS:
        print(f"session 1 user: {turn}")
        print(f"session 1 assistant: {first.chat(turn).response!r}")
    print(f"flushed from short-term memory and queued: {block.pending}")
    started = time.perf_counter()
    report = block.flush()
    print(
        f"consolidated {report.added if report else []} into {folder} "
        f"({time.perf_counter() - started:.1f}s)"
    )

    second = session("session-2")
    print(f"session 2 user (no history): {QUESTION}")
    print(f"recalled by the memory block: {block.recollect(QUESTION)!r}")
    print(f"session 2 assistant: {second.chat(QUESTION).response!r}")


if __name__ == "__main__":
    main()
