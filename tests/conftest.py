"""Shared fixtures: wire captures, and a fresh price book per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import burnmap

FIXTURES = Path(__file__).parent / "fixtures"
WIRE = FIXTURES / "wire"


def wire(name: str) -> bytes:
    return (WIRE / name).read_bytes()


@pytest.fixture(autouse=True)
def _clean_prices() -> Iterator[None]:
    yield
    burnmap.prices.clear()
