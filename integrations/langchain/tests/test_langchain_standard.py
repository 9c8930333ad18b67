"""LangChain's standard test suites (langchain-tests 1.1.9) on the tiny model, and (marked
slow) on the real default model."""

from __future__ import annotations

import functools
from collections.abc import Generator

import pytest
from langchain_core.indexing.base import DocumentIndex
from langchain_parametric_memory import (
    ChatParametricMemory,
    ParametricMemoryIndex,
    ParametricMemoryRetriever,
)
from langchain_tests.integration_tests import (
    ChatModelIntegrationTests,
    RetrieversIntegrationTests,
)
from langchain_tests.integration_tests.indexer import (
    AsyncDocumentIndexTestSuite,
    DocumentIndexerTestSuite,
)
from langchain_tests.unit_tests import ChatModelUnitTests
from lc_tiny import FACTS, new_memory, scratch_dir, shared_memory

from parametric_memory import MemoryConfig, ParametricMemory


@functools.cache
def default_memory() -> ParametricMemory:
    """An empty memory on the real default model (nothing consolidated: creating one is
    quick, and these suites test the interfaces, not recall quality)."""
    return ParametricMemory.create(scratch_dir("pm-lc-default-") / "memory", MemoryConfig())


@functools.cache
def default_memory_with_a_document() -> ParametricMemory:
    """The real default model holding one short document, consolidated with quick settings
    (about a minute on CPU): a retriever over a memory that holds nothing returns nothing."""
    config = MemoryConfig(elicitation={"max_answer_tokens": 8}, consolidation={"epochs": 1})
    memory = ParametricMemory.create(scratch_dir("pm-lc-default-doc-") / "memory", config)
    memory.add_documents([FACTS], ids=["quillhaven"], progress=False)
    return memory


class NoToolCalling:
    """`bind_tools` is overridden only to raise a `NotImplementedError` that says what to use
    instead; the suites take an overridden `bind_tools` for tool-calling support."""

    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_tool_choice(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False


# --- tiny model ---------------------------------------------------------------------------
class TestChatParametricMemoryUnit(NoToolCalling, ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatParametricMemory]:
        return ChatParametricMemory

    @property
    def chat_model_params(self) -> dict:
        return {"memory": shared_memory()}


class TestChatParametricMemoryIntegration(NoToolCalling, ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[ChatParametricMemory]:
        return ChatParametricMemory

    @property
    def chat_model_params(self) -> dict:
        return {"memory": shared_memory(), "max_tokens": 16}


class TestParametricMemoryRetrieverIntegration(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[ParametricMemoryRetriever]:
        return ParametricMemoryRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"memory": shared_memory(), "max_new_tokens": 16}

    @property
    def retriever_query_example(self) -> str:
        return "the Quillhaven lantern festival"


class TestParametricMemoryIndexStandard(DocumentIndexerTestSuite):
    @pytest.fixture
    def index(self) -> Generator[DocumentIndex, None, None]:
        yield ParametricMemoryIndex(memory=new_memory())


class TestParametricMemoryIndexAsyncStandard(AsyncDocumentIndexTestSuite):
    @pytest.fixture
    def index(self) -> Generator[DocumentIndex, None, None]:  # a sync fixture serves async tests
        yield ParametricMemoryIndex(memory=new_memory())


# --- real default model (slow) ------------------------------------------------------------
@pytest.mark.slow
class TestChatParametricMemoryDefaultModel(NoToolCalling, ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[ChatParametricMemory]:
        return ChatParametricMemory

    @property
    def chat_model_params(self) -> dict:
        return {"memory": default_memory(), "max_tokens": 48}


@pytest.mark.slow
def test_default_model_memory_reports_the_models_name():
    """A memory made with `MemoryConfig()` records its model as "default"; the chat model
    reports the model's own name."""
    memory = default_memory()
    assert memory.info().model == "default"
    llm = ChatParametricMemory(memory=memory, max_tokens=2)
    assert llm._identifying_params["model_name"] == "SmolLM2-135M-Instruct"
    assert llm.invoke("Hi").response_metadata["model_name"] == "SmolLM2-135M-Instruct"


@pytest.mark.slow
class TestParametricMemoryRetrieverDefaultModel(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[ParametricMemoryRetriever]:
        return ParametricMemoryRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"memory": default_memory_with_a_document(), "max_new_tokens": 48}

    @property
    def retriever_query_example(self) -> str:
        return "the Quillhaven lantern festival"
