"""`ChatParametricMemory`: the memory's base model plus adapter as a LangChain chat model,
answering from its weights (the question is the whole prompt: no retrieved context)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from pydantic import ConfigDict, Field, model_validator

from parametric_memory import MemoryConfig, ParametricMemory

from ._memory import (
    count_prompt_tokens,
    count_tokens,
    messages_to_question,
    model_name,
    open_memory_input,
    stream_answer,
)

logger = logging.getLogger(__name__)


class ChatParametricMemory(BaseChatModel):
    """Chat with what a parametric memory holds in its weights.

    The message list becomes one question (see `history_turns`): the memory was trained on
    questions asked alone, so a single human message is passed unchanged. Decoding is
    greedy (`temperature` is accepted for compatibility and ignored). No tool calling or
    structured output: this is a small local model answering from its adapter.

    ```python
    llm = ChatParametricMemory(memory="my-memory", max_tokens=128)
    llm.invoke("When is the Quillhaven festival?").content
    for chunk in llm.stream("Who founded Brindlewick?"):
        print(chunk.content, end="")
    ```
    """

    memory: ParametricMemory
    """The memory, or the path of a memory folder (opened once per process)."""
    memory_config: MemoryConfig | None = None
    """With a folder that holds no memory yet: make one there with this config."""
    model_name: str | None = Field(default=None, alias="model")
    """Reported model name; defaults to the memory's base model."""
    max_tokens: int = Field(default=128, ge=1)
    """Most new tokens per answer."""
    temperature: float | None = None
    """Accepted and ignored: the memory decodes greedily."""
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    """Cut the answer at the first of these strings."""
    timeout: float | None = None
    """Accepted for compatibility (local model: no network calls to time out)."""
    max_retries: int | None = None
    """Accepted for compatibility (local model: nothing to retry)."""
    streaming: bool = False
    """Whether `invoke` streams internally (callbacks then see each token)."""
    history_turns: int = Field(default=2, ge=0)
    """Earlier human/AI exchanges prepended (shortened) to the last human message."""
    include_system: bool = True
    """Prepend system messages' text to the question."""

    model_config = ConfigDict(populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _open_memory(cls, data: Any) -> Any:
        return open_memory_input(data)

    @property
    def _llm_type(self) -> str:
        return "parametric-memory"

    @property
    def _resolved_model_name(self) -> str:
        return self.model_name or model_name(self.memory)

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self._resolved_model_name,
            "memory": str(self.memory.root),
            "max_tokens": self.max_tokens,
            "history_turns": self.history_turns,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="parametric-memory",
            ls_model_name=kwargs.get("model") or self._resolved_model_name,
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
            ls_max_tokens=kwargs.get("max_tokens", self.max_tokens),
        )
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    # --- tokens and tools -----------------------------------------------------------------
    def get_token_ids(self, text: str) -> list[int]:
        """Token ids of `text` in the memory's own tokenizer (no special tokens), which
        `get_num_tokens` and `get_num_tokens_from_messages` count (and so `trim_messages`
        and summarisation middleware), rather than LangChain's GPT-2 fallback."""
        if self.custom_get_token_ids is not None:
            return self.custom_get_token_ids(text)
        if not text:
            return []
        return list(self.memory.model.tokenizer(text, add_special_tokens=False)["input_ids"])

    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: str | None = None, **kwargs: Any
    ) -> Runnable[Any, AIMessage]:
        """Not supported: raises `NotImplementedError`, saying what to use instead."""
        raise NotImplementedError(
            "ChatParametricMemory does not support tool calling (nor structured output, "
            "which LangChain builds on it): it is a small local model answering from its "
            "memory's weights. To give an agent the memory, keep a tool-calling chat model "
            "for the agent and pass it create_parametric_memory_tool(memory) as a tool, or "
            "add ParametricMemoryMiddleware(memory) to create_agent(..., middleware=[...])."
        )

    # --- generation ---------------------------------------------------------------------
    def _question(self, messages: list[BaseMessage]) -> str:
        return messages_to_question(
            messages, history_turns=self.history_turns, include_system=self.include_system
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        question = self._question(messages)
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        # Not under model_lock: threads asking at once (`batch`, `abatch`) are answered
        # together in one batch by the memory itself.
        raw = self.memory.ask(question, max_new_tokens=max_tokens)
        text, stopped = _cut_at_stop(raw, stop or self.stop)
        usage = self._usage(question, raw)
        finish = "stop" if stopped or usage["output_tokens"] < max_tokens else "length"
        message = AIMessage(
            content=text,
            usage_metadata=usage,
            response_metadata=self._response_metadata(kwargs, finish),
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        question = self._question(messages)
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        stops = [s for s in (stop or self.stop or []) if s]
        hold = max((len(s) for s in stops), default=1) - 1
        generated, pending, started, stopped = "", "", False, False
        for piece in stream_answer(self.memory, question, max_tokens):
            generated += piece
            if not started:  # `ask` strips the answer; so does the stream
                piece = piece.lstrip()
                if not piece:
                    continue
                started = True
            pending += piece
            pending, stopped = _cut_at_stop(pending, stops)
            if stopped:
                break
            # Keep back trailing whitespace and what could be the start of a stop string.
            cut = max(len(pending.rstrip()) - hold, 0)
            ready, pending = pending[:cut], pending[cut:]
            if ready:
                yield self._chunk(ready, run_manager)
        tail = pending if stopped else pending.rstrip()
        if tail:
            yield self._chunk(tail, run_manager)
        usage = self._usage(question, generated)
        finish = "stop" if stopped or usage["output_tokens"] < max_tokens else "length"
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=usage,
                response_metadata=self._response_metadata(kwargs, finish),
                chunk_position="last",
            )
        )

    def _chunk(
        self, text: str, run_manager: CallbackManagerForLLMRun | None
    ) -> ChatGenerationChunk:
        chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
        if run_manager is not None:
            run_manager.on_llm_new_token(text, chunk=chunk)
        return chunk

    def _usage(self, question: str, answer: str) -> UsageMetadata:
        prompt_tokens = count_prompt_tokens(self.memory, question)
        answer_tokens = count_tokens(self.memory, answer)
        return UsageMetadata(
            input_tokens=prompt_tokens,
            output_tokens=answer_tokens,
            total_tokens=prompt_tokens + answer_tokens,
        )

    def _response_metadata(self, kwargs: dict[str, Any], finish: str) -> dict[str, Any]:
        return {
            "model_name": kwargs.get("model") or self._resolved_model_name,
            "model_provider": "parametric-memory",
            "memory": str(self.memory.root),
            "finish_reason": finish,
        }


def _cut_at_stop(text: str, stops: list[str] | None) -> tuple[str, bool]:
    """`text` up to the first stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops or [] if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
