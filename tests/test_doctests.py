"""The examples in docstrings are tests too: a module's documented behaviour must hold."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "burnmap._core.bound",
    "burnmap._core.decode",
    "burnmap._core.endpoint",
    "burnmap._core.ledger",
    "burnmap._core.loops",
    "burnmap._core.meter",
    "burnmap._core.money",
    "burnmap._core.pricing",
    "burnmap._core.sse",
    "burnmap._core.usage",
    "burnmap._core.windows",
    "burnmap.errors",
    "burnmap.ledgers",
    "burnmap.standin",
    "burnmap.wrap.launch",
    "burnmap.wrap.otlp",
    "burnmap.wrap.parsers",
    "burnmap.wrap.proxy",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
