"""Parametric long-term memory for LangChain 1.x agents (`langchain.agents.create_agent`).

Needs the `langchain` package: `pip install "langchain-parametric-memory[agents]"`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

from langchain_core.messages import BaseMessage, SystemMessage

from parametric_memory import IngestReport, MemoryConfig, ParametricMemory
from parametric_memory.integration import ConversationQueue

from ._memory import clean_text, last_human_text, open_memory, transcript
from .tools import create_parametric_memory_tool

try:
    from langchain.agents.middleware import AgentMiddleware, AgentState, ModelRequest
    from langchain.agents.middleware.types import ModelResponse
except ImportError as error:  # pragma: no cover - depends on the optional extra
    raise ImportError(
        "ParametricMemoryMiddleware needs LangChain 1.1+ agents: "
        'pip install "langchain-parametric-memory[agents]" (or `pip install "langchain>=1.1,<2"`)'
    ) from error

if "system_message" not in getattr(ModelRequest, "__dataclass_fields__", {}):
    # langchain 1.0.x: its ModelRequest has only `system_prompt` (a string).
    raise ImportError(
        "ParametricMemoryMiddleware needs langchain 1.1 or later (ModelRequest.system_message); "
        'upgrade with pip install "langchain>=1.1,<2"'
    )

logger = logging.getLogger(__name__)

DEFAULT_RECALL_TEMPLATE = (
    "Relevant facts recalled from long-term memory (may be incomplete):\n{recollection}"
)


class ParametricMemoryMiddleware(AgentMiddleware):
    """Recall before each model call; remember conversations after the agent finishes.

    - Before a model call, the last human message is recalled from the memory
      (`memory.recall`) and the recollection is appended to the system message. One recall
      per distinct human message: the tool-loop's later model calls reuse it.
    - After the agent finishes (`after_agent`), the turns not seen before (human and AI
      text, or only those of `remember_roles`; tool calls and tool results are left out)
      are queued as one conversation document. Consolidating a document trains the
      adapter (seconds on a GPU, minutes on a CPU), so by default nothing is written until
      you call `flush()`; pass `consolidate="after_agent"` to consolidate at the end of
      every run instead.
    - `with_tool=True` also gives the agent a `recall_memory` tool
      (`create_parametric_memory_tool`) to recall other topics on demand.
    - `memory` is a `ParametricMemory` or a folder; with `memory_config`, a folder that holds
      no memory yet becomes a new memory made with that config.

    ```python
    memory_middleware = ParametricMemoryMiddleware("my-memory")
    agent = create_agent(model, tools=[...], middleware=[memory_middleware])
    agent.invoke({"messages": [{"role": "user", "content": "Where is the festival?"}]})
    memory_middleware.flush()  # consolidate the queued conversations into the adapter
    ```
    """

    def __init__(
        self,
        memory: ParametricMemory | str,
        *,
        memory_config: MemoryConfig | None = None,
        recall: bool = True,
        consolidate: Literal["flush", "after_agent", "never"] = "flush",
        max_new_tokens: int = 192,
        recall_template: str = DEFAULT_RECALL_TEMPLATE,
        with_tool: bool = False,
        remember_roles: Sequence[str] = ("human", "ai"),
        document_prefix: str = "conversation",
        progress: bool = False,
    ) -> None:
        super().__init__()
        if not set(remember_roles) <= {"human", "ai"} or not remember_roles:
            raise ValueError(
                f"remember_roles must name 'human' and/or 'ai', got {remember_roles!r}"
            )
        if consolidate not in ("flush", "after_agent", "never"):
            raise ValueError(
                f"consolidate must be 'flush', 'after_agent' or 'never', got {consolidate!r}"
            )
        self.memory = open_memory(memory, memory_config)
        self.recall = recall
        self.consolidate = consolidate
        self.max_new_tokens = max_new_tokens
        self.recall_template = recall_template
        self.remember_roles = tuple(remember_roles)
        self.document_prefix = document_prefix
        self.progress = progress
        self.tools = [create_parametric_memory_tool(self.memory)] if with_tool else []
        self._queue = ConversationQueue(self.memory)
        self._seen: set[str] = set()
        self._seen_lock = threading.Lock()

    # --- recall -------------------------------------------------------------------------
    def recollect(self, query: str) -> str:
        """What the memory recalls about `query` (cached per query until the next flush);
        empty while the memory holds no documents (a bare model's recollection is noise)."""
        return self._queue.recollect(query, self.max_new_tokens)

    def _with_recollection(self, request: ModelRequest, text: str) -> ModelRequest:
        if not text.strip():
            return request
        block = self.recall_template.format(recollection=text.strip())
        system = request.system_message
        if system is None:
            return request.override(system_message=SystemMessage(content=block))
        if isinstance(system.content, str):
            content: Any = f"{system.content}\n\n{block}" if system.content else block
        else:
            content = [*system.content, {"type": "text", "text": block}]
        return request.override(system_message=SystemMessage(content=content))

    def wrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
    ) -> Any:
        query = last_human_text(request.messages) if self.recall else ""
        if query:
            request = self._with_recollection(request, self.recollect(query))
        return handler(request)

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[ModelResponse]]
    ) -> Any:
        query = last_human_text(request.messages) if self.recall else ""
        if query:
            text = await asyncio.to_thread(self.recollect, query)
            request = self._with_recollection(request, text)
        return await handler(request)

    # --- remembering --------------------------------------------------------------------
    def after_agent(self, state: AgentState, runtime: Any) -> dict[str, Any] | None:
        if self.consolidate != "never":
            self.queue_messages(state.get("messages", []))
            if self.consolidate == "after_agent":
                self.flush()
        return None

    async def aafter_agent(self, state: AgentState, runtime: Any) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.after_agent, state, runtime)

    def queue_messages(self, messages: Sequence[BaseMessage]) -> str | None:
        """Queue the human/AI turns of `messages` not queued before as one conversation
        document; returns its id (None when there was nothing new)."""
        with self._seen_lock:
            fresh = []
            for message in messages:
                key = message.id or f"{message.type}:{_digest(message.text)}"
                if key not in self._seen:
                    self._seen.add(key)
                    fresh.append(message)
            text = transcript(fresh, self.remember_roles)
            if not any(m.type == "human" for m in fresh) or not clean_text(text):
                return None
            return self._queue.queue(text, self.document_prefix, {"source": "langchain-agent"})

    @property
    def pending(self) -> list[str]:
        """Texts of the conversations queued and not yet consolidated."""
        return self._queue.pending

    def flush(self) -> IngestReport | None:
        """Consolidate the queued conversations into the memory (one commit per
        conversation). Returns the memory's report, or None when nothing was queued."""
        return self._queue.flush(self.progress)

    async def aflush(self) -> IngestReport | None:
        return await asyncio.to_thread(self.flush)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
