"""The public surface: names users rely on, and how errors travel."""

from __future__ import annotations

import dataclasses
import importlib
import pickle
import pkgutil
import types
from decimal import Decimal

import anthropic
import openai
import pytest

import burnmap
from burnmap.errors import sdk_compatible


def test_all_is_sorted_and_complete() -> None:
    assert burnmap.__all__ == sorted(burnmap.__all__)
    public = {
        n
        for n in dir(burnmap)
        if not n.startswith("_")
        and n != "annotations"
        and (n == "prices" or not isinstance(getattr(burnmap, n), types.ModuleType))
    }
    assert public - set(burnmap.__all__) == set()
    for name in burnmap.__all__:
        assert hasattr(burnmap, name), name


def test_every_module_declares_a_sorted_all() -> None:
    for info in pkgutil.walk_packages(burnmap.__path__, "burnmap."):
        module = importlib.import_module(info.name)
        names = getattr(module, "__all__", None)
        assert names is not None, info.name
        assert list(names) == sorted(names), info.name
        for name in names:
            assert hasattr(module, name), (info.name, name)


def test_contract_names() -> None:
    for name in ("client", "async_client", "Transport", "AsyncTransport", "run"):
        assert callable(getattr(burnmap, name))
    report_fields = {
        "summary",
        "cost_by_call",
        "model_breakdown",
        "total_cost",
        "budget_remaining",
        "stopped_early",
        "duration_seconds",
        "to_dict",
        "to_json",
    }
    fields = {f.name for f in dataclasses.fields(burnmap.RunReport)}
    assert report_fields <= fields | set(dir(burnmap.RunReport))
    err = burnmap.BudgetExceededError(job_name="j", budget=Decimal(1), scope="run:j")
    for attr in ("job_name", "budget", "spent_so_far", "call_count", "scope"):
        assert hasattr(err, attr)
    loop = burnmap.LoopDetectedError("m", trigger="call_rate", job_name="j", call_count=3)
    assert (loop.trigger, loop.job_name, loop.call_count) == ("call_rate", "j", 3)


def test_refusals_also_subclass_every_loaded_sdk_base_error() -> None:
    err = sdk_compatible(burnmap.BudgetExceededError(job_name="j", scope="run:j"))
    assert isinstance(err, burnmap.BudgetExceededError)
    assert isinstance(err, anthropic.AnthropicError)
    assert isinstance(err, openai.OpenAIError)
    assert not isinstance(err, anthropic.APIConnectionError)
    assert type(err).__name__ == "BudgetExceededError"
    again = sdk_compatible(burnmap.BudgetExceededError(job_name="k"))
    assert type(again) is type(err)  # built once, cached


@pytest.mark.parametrize(
    "error",
    [
        burnmap.BudgetExceededError(
            job_name="j", budget=Decimal(2), spent_so_far=Decimal(1), call_count=3, scope="run:j"
        ),
        burnmap.LoopDetectedError("looping", trigger="call_rate", job_name="j", call_count=3),
        burnmap.UnknownModelError("acme-1", "openai"),
        burnmap.UnknownModelError("acme-search-preview", "openai", search_fee=True),
        burnmap.UnknownModelError("gpt-image-9", "openai", tool="image_generation"),
        burnmap.UnknownModelError("claude-sonet-4-6", similar=("claude-sonnet-4-6",)),
    ],
)
def test_errors_pickle_across_processes(error: burnmap.RefusalError) -> None:
    mixed = sdk_compatible(error)
    back = pickle.loads(pickle.dumps(mixed))
    assert str(back) == str(error)
    assert isinstance(back, burnmap.RefusalError)
    assert back.__dict__ == dict(mixed.__dict__)
