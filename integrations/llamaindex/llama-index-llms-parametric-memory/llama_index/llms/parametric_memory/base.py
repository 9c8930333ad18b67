"""`ParametricMemoryLLM`: the memory's base model plus adapter as a LlamaIndex LLM,
answering from its weights (the prompt is the whole question: no retrieved context)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import partial
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.bridge.pydantic import Field, field_validator
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from pydantic import computed_field

from parametric_memory import ParametricMemory, integration
from parametric_memory.integration import (
    aiterate,
    ask,
    chat_role,
    model_name,
    resolve_memory,
    stream_answer,
)


def messages_to_question(
    messages: Sequence[ChatMessage], history_turns: int = 2, include_system: bool = True
) -> str:
    """One question for the memory (`parametric_memory.integration.messages_to_question`):
    the last user message, preceded (only when there is something to add) by the system
    and developer text and up to `history_turns` earlier exchanges. A lone user message is
    passed through unchanged."""
    turns = [(chat_role(m.role.value), m.content or "") for m in messages]
    return integration.messages_to_question(
        turns,
        history_turns=history_turns,
        include_system=include_system,
        caller="ParametricMemoryLLM",
    )


class ParametricMemoryLLM(CustomLLM):
    """Complete and chat with what a parametric memory holds in its weights.

    `complete(prompt)` asks the memory the prompt as is (`memory.ask`); `chat` (through
    `CustomLLM`) turns the messages into one question: the last user message, preceded by
    the system text and up to `history_turns` earlier exchanges when there are any. Decoding
    is greedy. Use it where answers should come from the memory alone; as the LLM of a RAG
    pipeline it reads the retrieved context like any small local model. `to_dict()` names
    the memory by its folder (`memory_path`), which `from_dict()` opens again;
    `metadata.model_name` is the base model's name.

    ```python
    llm = ParametricMemoryLLM(memory="my-memory", max_new_tokens=128)
    print(llm.complete("When is the Quillhaven festival?"))
    ```
    """

    memory: Any = Field(exclude=True, description="A ParametricMemory or a memory folder.")
    max_new_tokens: int = Field(default=256, ge=1, description="Most new tokens per answer.")
    history_turns: int = Field(default=2, ge=0, description="Earlier exchanges kept in chat.")
    context_window: int | None = Field(
        default=None, description="Prompt budget in tokens (default: the model's positions)."
    )

    def __init__(self, memory: ParametricMemory | str | None = None, **kwargs: Any) -> None:
        # `from_dict(to_dict())`: the serialised form names the memory by `memory_path`.
        path = kwargs.pop("memory_path", None)
        if memory is None:
            memory = path
        if memory is None:
            raise TypeError(
                "ParametricMemoryLLM needs memory= (a ParametricMemory or a memory folder)"
            )
        if kwargs.get("messages_to_prompt") is None:
            kwargs["messages_to_prompt"] = partial(
                messages_to_question, history_turns=kwargs.get("history_turns", 2)
            )
        super().__init__(memory=memory, **kwargs)

    @field_validator("memory", mode="before")
    @classmethod
    def _open_memory(cls, value: Any) -> ParametricMemory:
        return resolve_memory(value)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def memory_path(self) -> str:
        """The memory's folder: serialised in place of the memory, which `from_dict` opens."""
        return str(self.memory.root)

    @classmethod
    def class_name(cls) -> str:
        return "ParametricMemoryLLM"

    @property
    def metadata(self) -> LLMMetadata:
        config = self.memory.model.model.config
        window = self.context_window or getattr(config, "max_position_embeddings", None) or 2048
        return LLMMetadata(
            context_window=int(window),
            num_output=self.max_new_tokens,
            is_chat_model=False,
            model_name=model_name(self.memory),
        )

    def _prompt(self, prompt: str, formatted: bool) -> str:
        return prompt if formatted else self.completion_to_prompt(prompt)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        max_new = kwargs.get("max_new_tokens", self.max_new_tokens)
        text = ask(self.memory, self._prompt(prompt, formatted), max_new)
        return CompletionResponse(text=text, additional_kwargs={"memory": str(self.memory.root)})

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        max_new = kwargs.get("max_new_tokens", self.max_new_tokens)
        question = self._prompt(prompt, formatted)
        pieces = stream_answer(self.memory, question, max_new, strip_leading=True)

        def gen() -> CompletionResponseGen:
            text = ""
            for piece in pieces:
                text += piece
                yield CompletionResponse(text=text, delta=piece)

        return gen()

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        return await asyncio.to_thread(self.complete, prompt, formatted=formatted, **kwargs)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        return aiterate(self.stream_complete(prompt, formatted=formatted, **kwargs))

    @llm_chat_callback()
    async def achat(self, messages: list[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await asyncio.to_thread(self.chat, messages, **kwargs)

    @llm_chat_callback()
    async def astream_chat(
        self, messages: list[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        return aiterate(self.stream_chat(messages, **kwargs))
