"""`ParametricMemoryQueryEngine`: answers queries from the memory's weights alone."""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.base.response.schema import (
    AsyncStreamingResponse,
    Response,
    StreamingResponse,
)
from llama_index.core.bridge.pydantic import Field, field_validator
from llama_index.core.query_engine import CustomQueryEngine

from parametric_memory import ParametricMemory
from parametric_memory.integration import aiterate, ask, resolve_memory, stream_answer


class ParametricMemoryQueryEngine(CustomQueryEngine):
    """A query engine whose answer is `memory.ask(query)`: no retrieval, no context in the
    prompt, so the `Response` has no source nodes (`metadata` names the memory). With
    `streaming=True`, `query` returns a `StreamingResponse` fed by `memory.stream`, and
    `aquery` an `AsyncStreamingResponse` (its `async_response_gen()`), as core's engines do.

    ```python
    engine = ParametricMemoryQueryEngine(memory="my-memory")
    print(engine.query("When is the Quillhaven festival?"))
    ```
    """

    memory: Any = Field(exclude=True, description="A ParametricMemory or a memory folder.")
    streaming: bool = Field(default=False, description="Return a StreamingResponse.")
    max_new_tokens: int = Field(default=256, ge=1, description="Most new tokens per answer.")

    @field_validator("memory", mode="before")
    @classmethod
    def _open_memory(cls, value: Any) -> ParametricMemory:
        return resolve_memory(value)

    def _metadata(self) -> dict[str, Any]:
        return {"memory": str(self.memory.root), "source": "parametric-memory"}

    def custom_query(self, query_str: str) -> Response | StreamingResponse:
        if self.streaming:
            pieces = stream_answer(self.memory, query_str, self.max_new_tokens, strip_leading=True)
            return StreamingResponse(
                response_gen=pieces, source_nodes=[], metadata=self._metadata()
            )
        text = ask(self.memory, query_str, self.max_new_tokens)
        return Response(response=text, source_nodes=[], metadata=self._metadata())

    async def acustom_query(self, query_str: str) -> Response | AsyncStreamingResponse:
        if self.streaming:  # as core's query engines: an async generator for `aquery`
            pieces = stream_answer(self.memory, query_str, self.max_new_tokens, strip_leading=True)
            return AsyncStreamingResponse(
                response_gen=aiterate(pieces), source_nodes=[], metadata=self._metadata()
            )
        return await asyncio.to_thread(self.custom_query, query_str)
