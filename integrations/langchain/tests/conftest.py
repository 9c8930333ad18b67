from __future__ import annotations

import inspect
import warnings

import pytest

warnings.filterwarnings("ignore", message=".*DocumentIndex.*beta.*")


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector, name, obj):
    """Run the standard suites' `async def` tests with pytest-asyncio (strict mode, as the
    repository's pytest configuration has no asyncio_mode)."""
    if name.startswith("test") and inspect.iscoroutinefunction(obj):
        marks = getattr(obj, "pytestmark", [])
        if not any(mark.name == "asyncio" for mark in marks):
            pytest.mark.asyncio(obj)
