"""A LangChain 1.x chat agent with parametric long-term memory.

Session 1 tells the agent something; `ParametricMemoryMiddleware` queues the conversation
after the run and `flush()` consolidates it into the memory's adapter. Session 2 starts
with no chat history: before the model call the middleware recalls the question from the
weights into the system message, where any LangChain chat model (a hosted one, typically)
reads it. To stay local, the agent's model here is `ChatParametricMemory` itself, told to
answer from its weights alone (`include_system=False`). Needs the `langchain` package
(extra "agents").

    python examples/langchain_agent_memory.py                       # real default model
    python examples/langchain_agent_memory.py --model PATH --fast   # tiny settings (tests)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from langchain.agents import create_agent
from langchain_core.messages import HumanMessage
from langchain_parametric_memory import ChatParametricMemory, ParametricMemoryMiddleware

from parametric_memory import MemoryConfig, ParametricMemory

FIRST_SESSION = "Please remember this: our team offsite is in Quillhaven on May 14."
SECOND_SESSION = "Where is our team offsite?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="base model (default: SmolLM2)")
    parser.add_argument("--fast", action="store_true", help="tiny settings (for tests)")
    parser.add_argument("--memory", type=Path, help="memory folder (default: a temp folder)")
    args = parser.parse_args()

    folder = args.memory or Path(tempfile.mkdtemp(prefix="langchain-agent-")) / "memory"
    config = MemoryConfig(model=args.model)
    if args.fast:
        config = MemoryConfig(
            model=args.model,
            elicitation={"max_answer_tokens": 8},
            consolidation={"epochs": 1},
        )
    memory = ParametricMemory.create(folder, config, exist_ok=True)
    # The agent's model here is the same small model: remember what the user said only.
    long_term = ParametricMemoryMiddleware(memory, max_new_tokens=64, remember_roles=["human"])
    model = ChatParametricMemory(memory=memory, max_tokens=48, include_system=False)
    agent = create_agent(model, middleware=[long_term])

    reply = agent.invoke({"messages": [HumanMessage(FIRST_SESSION)]})["messages"][-1]
    print(f"session 1 user: {FIRST_SESSION}")
    print(f"session 1 agent: {reply.content!r}")
    print(f"queued for consolidation: {long_term.pending}")
    started = time.perf_counter()
    report = long_term.flush()
    print(
        f"consolidated {report.added if report else []} into {folder} "
        f"({time.perf_counter() - started:.1f}s)"
    )

    print(f"recalled into the system message: {long_term.recollect(SECOND_SESSION)!r}")
    reply = agent.invoke({"messages": [HumanMessage(SECOND_SESSION)]})["messages"][-1]
    print(f"session 2 user (no history): {SECOND_SESSION}")
    print(f"session 2 agent: {reply.content!r}")


if __name__ == "__main__":
    main()
