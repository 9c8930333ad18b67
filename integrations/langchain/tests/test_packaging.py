"""What the packages declare and ship (issue 29): the `[agents]` extra's lower bound, the
core's `py.typed` marker and the repository's LICENSE."""

from __future__ import annotations

import sys
from importlib import metadata, resources

import pytest
from lc_tiny import REPO
from packaging.requirements import Requirement
from packaging.version import Version

tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")

LANGCHAIN_PYPROJECT = REPO / "integrations" / "langchain" / "pyproject.toml"


def _agents_langchain_requirement() -> Requirement:
    project = tomllib.loads(LANGCHAIN_PYPROJECT.read_text())["project"]
    [requirement] = [
        Requirement(line)
        for line in project["optional-dependencies"]["agents"]
        if Requirement(line).name == "langchain"
    ]
    return requirement


def test_agents_extra_requires_the_langchain_that_has_system_message():
    """The middleware reads and overrides `ModelRequest.system_message`, which langchain 1.1
    added (langchain-ai/langchain#34055); 1.0.x has only `system_prompt`."""
    specifier = _agents_langchain_requirement().specifier
    assert not specifier.contains("1.0.0") and not specifier.contains("1.0.8")
    assert specifier.contains("1.1.0")
    lowest = min(Version(s.version) for s in specifier if s.operator in (">=", ">", "~=", "=="))
    assert lowest >= Version("1.1")
    installed = metadata.version("langchain")
    assert specifier.contains(installed), f"installed langchain {installed} is outside {specifier}"

    from langchain.agents.middleware import ModelRequest

    assert "system_message" in ModelRequest.__dataclass_fields__


def test_core_package_ships_py_typed_and_the_repository_has_its_license():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    package_data = pyproject["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["parametric_memory"]
    assert resources.files("parametric_memory").joinpath("py.typed").is_file()

    assert pyproject["project"]["license"] == "Apache-2.0"
    license_text = (REPO / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text  # the full text, not a stub
