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
from lc_tiny import new_memory, scratch_dir, shared_memory

from parametric_memory import MemoryConfig, ParametricMemory


@functools.cache
def default_memory() -> ParametricMemory:
    """An empty memory on the real default model (nothing consolidated: creating one is
    quick, and these suites test the interfaces, not recall quality)."""
    return ParametricMemory.create(scratch_dir("pm-lc-default-") / "memory", MemoryConfig())


# --- tiny model ---------------------------------------------------------------------------
class TestChatParametricMemoryUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatParametricMemory]:
        return ChatParametricMemory

    @property
    def chat_model_params(self) -> dict:
        return {"memory": shared_memory()}


class TestChatParametricMemoryIntegration(ChatModelIntegrationTests):
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
class TestChatParametricMemoryDefaultModel(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[ChatParametricMemory]:
        return ChatParametricMemory

    @property
    def chat_model_params(self) -> dict:
        return {"memory": default_memory(), "max_tokens": 48}


@pytest.mark.slow
class TestParametricMemoryRetrieverDefaultModel(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[ParametricMemoryRetriever]:
        return ParametricMemoryRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"memory": default_memory(), "max_new_tokens": 48}

    @property
    def retriever_query_example(self) -> str:
        return "the Quillhaven lantern festival"
