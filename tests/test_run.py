"""Run scopes and reports."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import json
import threading
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest

import burnmap
from burnmap._core.usage import Usage
from burnmap.runs import Settlement


def settle(run: burnmap.Run, cost: str, model: str = "m", *, tokens: int = 10) -> None:
    reservation = run.reserve(Decimal(cost), model=model)
    reservation.settle(
        Settlement(
            model=model,
            provider="p",
            endpoint="messages",
            usage=Usage(input_tokens=tokens, output_tokens=2 * tokens, cache_read_tokens=1),
            cost=Decimal(cost),
            estimated=False,
            streamed=False,
        )
    )


def test_report_fields_and_json() -> None:
    with burnmap.run("job", budget=1, user_id="usr_1") as r:
        settle(r, "0.25", "a")
        settle(r, "0.5", "b")
        settle(r, "0.125", "a")
    report = r.report
    assert report.total_cost == Decimal("0.875")
    assert report.budget_remaining == Decimal("0.125")
    assert report.call_count == 3
    assert not report.stopped_early
    assert report.duration_seconds >= 0
    assert [row["cumulative_cost"] for row in report.cost_by_call] == [
        Decimal("0.25"),
        Decimal("0.75"),
        Decimal("0.875"),
    ]
    assert report.model_breakdown["a"]["calls"] == 2
    assert report.model_breakdown["a"]["cost"] == Decimal("0.375")
    data = json.loads(report.to_json())
    assert data["total_cost"] == "0.875"
    assert data["user_id"] == "usr_1"
    assert data["cost_by_call"][2]["cumulative_cost"] == "0.875"
    assert set(data["cost_by_call"][0]) >= {
        "model",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "cost",
        "cumulative_cost",
    }
    text = report.summary()
    for part in ("'job'", "$0.875000", "3 calls", "a: 2 calls", "b: 1 call,"):
        assert part in text


def test_a_saved_report_reads_back_the_same() -> None:
    with burnmap.run("job", budget="0.5", user_id="usr_1") as r:
        settle(r, "0.25", "a", tokens=7)
        settle(r, "0.125", "b")
        with pytest.raises(burnmap.BudgetExceededError):
            settle(r, "0.25", "a")
    report = r.report
    back = burnmap.RunReport.from_json(report.to_json())
    assert back.to_dict() == report.to_dict()
    assert back.summary() == report.summary()
    assert back.calls[0].usage.output_tokens == 14
    good: dict[str, Any] = {"job_name": "j", "total_cost": "1", "cost_by_call": []}
    row = {"model": "m", "cost": "1"}
    for broken, says in (
        ({"job_name": "j", "cost_by_call": []}, "no 'total_cost'"),
        ({**good, "total_cost": "-1"}, ">= 0"),
        ({**good, "total_cost": "1e999999"}, "plausible"),
        ({**good, "cost_by_call": [{"model": "m"}]}, "'cost'"),
        ({**good, "cost_by_call": {}}, "not a list"),
        ({**good, "cost_by_call": ["row"]}, "not an object"),
        ({**good, "job_name": None}, "not str"),
        ({**good, "stopped_early": "false"}, "not bool"),
        ({**good, "duration_seconds": float("nan")}, "not a duration"),
        ({**good, "refused_calls": True}, "not a count"),
        ({**good, "cost_by_call": [{**row, "input_tokens": -7}]}, "not a count"),
        ({**good, "cost_by_call": [{**row, "output_tokens": 1.9}]}, "not a count"),
    ):
        with pytest.raises(ValueError, match=says):
            burnmap.RunReport.from_dict(broken)
    with pytest.raises(ValueError, match="not a JSON object"):
        burnmap.RunReport.from_json("[]")


def test_every_report_a_run_writes_reads_back() -> None:
    with burnmap.run("big", budget=10**12, user_id=42) as r:  # type: ignore[arg-type]
        settle(r, "0.5")
    back = burnmap.RunReport.from_json(r.report.to_json())
    assert (back.user_id, back.budget, back.total_cost) == ("42", Decimal(10**12), Decimal("0.5"))


def test_refusal_marks_the_report_and_carries_figures() -> None:
    with burnmap.run("job", budget="0.5") as r:
        settle(r, "0.4")
        with pytest.raises(burnmap.BudgetExceededError) as info:
            r.reserve(Decimal("0.2"), model="m")
    err = info.value
    assert (err.spent_so_far, err.budget, err.call_count) == (Decimal("0.4"), Decimal("0.5"), 1)
    assert err.needed == Decimal("0.2")
    assert "spent $0.4 of $0.5" in str(err)
    assert r.report.stopped_early
    assert r.report.stop_reason == "budget run:job would be exceeded"


def test_in_flight_reservations_count_against_the_budget() -> None:
    with burnmap.run("job", budget=1) as r:
        held = r.reserve(Decimal("0.7"), model="m")
        assert r.reserved == Decimal("0.7")
        with pytest.raises(burnmap.BudgetExceededError) as info:
            r.reserve(Decimal("0.4"), model="m")
        assert info.value.reserved == Decimal("0.7")
        held.release(failed=False)
        r.reserve(Decimal("0.00147600"), model="m").release()
    assert r.reserved == 0
    assert str(r.reserved) == "0"  # printed plainly, not as 0E-8


def test_settle_and_release_happen_once() -> None:
    with burnmap.run("job", budget=1) as r:
        reservation = r.reserve(Decimal("0.5"), model="m")
        reservation.release()
        reservation.release()
        reservation.settle(Settlement("m", "p", "e", Usage(), Decimal("0.5"), False, False))
    assert (r.spent, r.reserved, r.call_count) == (0, 0, 0)


async def test_async_with_and_nesting() -> None:
    async with burnmap.run("outer") as outer:
        assert burnmap.current_run() is outer
        async with burnmap.run("inner", budget=1) as inner:
            assert burnmap.current_run() is inner
            settle(inner, "0.1")
        assert burnmap.current_run() is outer
    assert burnmap.current_run() is None
    assert outer.spent == inner.spent == Decimal("0.1")
    assert outer.budget is None
    assert outer.report.budget_remaining is None


def test_a_run_is_entered_once() -> None:
    r = burnmap.run("job")
    with r:
        pass
    with pytest.raises(RuntimeError, match="already entered"), r:
        pass


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (-1, ">= 0"),
        ("abc", "not an amount of dollars"),
        ("5 USD", "not an amount of dollars"),
        (float("nan"), "finite"),
        (True, "not a bool"),
        ([1], "not list"),
    ],
)
def test_bad_budgets_are_rejected_with_what_to_give(bad: object, says: str) -> None:
    with pytest.raises((ValueError, TypeError), match=says):
        burnmap.run("job", budget=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("limits", "says"),
    [
        ({"call_rate_limit": 0}, "call_rate_limit must be at least 1, or None"),
        ({"repeat_limit": -3}, "repeat_limit must be at least 1"),
        ({"context_growth_limit": 1}, "context_growth_limit must be more than 1"),
        ({"context_growth_limit": float("nan")}, "must be a number"),
        ({"call_rate_limit": 2.5}, "a whole number of calls"),
        ({"call_rate_limit": float("inf")}, "a whole number of calls"),
        ({"repeat_limit": True}, "a whole number or None"),
        ({"repeat_limit": "5"}, "a whole number or None"),
    ],
)
def test_loop_limits_that_would_refuse_every_call_are_rejected(
    limits: dict[str, object], says: str
) -> None:
    """A limit of 0 would refuse every call with a message about a loop: None turns a
    trigger off, and the error says so."""
    with pytest.raises((ValueError, TypeError), match=says):
        burnmap.run("job", budget=1, **limits)  # type: ignore[arg-type]


def test_limits_given_as_other_numbers_are_taken() -> None:
    r = burnmap.run("job", call_rate_limit=600.0, context_growth_limit=Decimal("1.5"))  # type: ignore[arg-type]
    assert (r.call_rate_limit, r.context_growth_limit) == (600, 1.5)


def test_empty_job_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="job name"):
        burnmap.run("")


def test_call_rate_limit_refuses_before_the_call() -> None:
    with burnmap.run("loop", budget=10, call_rate_limit=3, repeat_limit=None) as r:
        for _ in range(3):
            settle(r, "0.01")
        with pytest.raises(burnmap.LoopDetectedError) as info:
            r.reserve(Decimal("0.01"), model="m")
    assert info.value.trigger == "call_rate"
    assert info.value.call_count == 3
    assert r.report.stop_reason is not None
    assert "call_rate" in r.report.stop_reason


def test_context_growth_limit() -> None:
    with burnmap.run("grow", context_growth_limit=1.5) as r:
        for tokens in (9_000, 18_000, 36_000, 72_000, 144_000):
            settle(r, "0.01", tokens=tokens)
        with pytest.raises(burnmap.LoopDetectedError) as info:
            r.reserve(Decimal("0.01"), model="m")
    assert info.value.trigger == "context_growth"


def test_observer_fields_read_back_as_the_same_record() -> None:
    """``burnmap wrap`` gets a child's calls as observer fields: nothing is lost on the way."""
    from burnmap.runs import CallRecord, _record_fields, record_from_fields

    record = CallRecord(
        model="gpt-4o-audio-preview",
        provider="openai",
        endpoint="chat",
        usage=Usage(
            input_tokens=95,
            output_tokens=128,
            cache_read_tokens=3,
            cache_write_tokens=4,
            cache_write_1h_tokens=5,
            reasoning_tokens=6,
            input_audio_tokens=74,
            output_audio_tokens=111,
            web_searches=2,
        ),
        cost=Decimal("0.012345"),
        reserved=Decimal("0.5"),
        estimated=True,
        streamed=True,
        started_at=1_777_660_000.25,
        duration_seconds=1.5,
        fingerprint="abc",
    )
    assert record_from_fields(json.loads(json.dumps(_record_fields(record)))) == record


def test_a_generator_closed_on_another_thread_leaves_that_threads_run_alone() -> None:
    """An agent written as a generator that entered a run, dropped half-way and closed
    elsewhere (the garbage collector runs finalizers on whatever thread it interrupts):
    the thread it is closed on keeps its own run, and the thread that entered it passes
    over the finished run."""

    def agent() -> Iterator[int]:
        with burnmap.run("agent", budget=1):
            yield 1
            yield 2

    steps = agent()
    next(steps)  # the run is now current in this thread's context
    seen: list[burnmap.Run | None] = []

    def other() -> None:
        with burnmap.run("other", budget="0.001") as mine:
            steps.close()  # as the collector would, on this thread
            seen.append(burnmap.current_run())
            assert mine.spent == 0

    worker = threading.Thread(target=other)
    worker.start()
    worker.join()
    assert [r.job_name if r else None for r in seen] == ["other"]
    assert burnmap.current_run() is None
    with burnmap.run("next") as later:
        assert later.parent is None


async def test_an_async_generator_dropped_without_aclose_does_not_keep_its_run() -> None:
    """An async agent that entered a run, dropped after its first answer: the event loop
    closes it in a task of its own; the consumer's later calls are not the agent's."""

    async def agent() -> AsyncIterator[int]:
        async with burnmap.run("agent", budget="0.0006"):
            for step in range(3):
                yield step

    async with burnmap.run("consumer", budget=1) as consumer:
        async for _ in agent():
            break  # no aclose(): the loop's finalizer closes it later
        gc.collect()
        for _ in range(3):
            await asyncio.sleep(0)
        assert burnmap.current_run() is consumer
    assert burnmap.current_run() is None


def test_a_thread_that_joined_a_run_keeps_it_however_the_runs_block_ended() -> None:
    """A worker joined with r.attach() counts against the run until its own `with` ends,
    even when the run's block ended on another thread (a generator closed elsewhere)."""
    joined = threading.Event()
    release = threading.Event()
    seen: list[burnmap.Run | None] = []

    def agent() -> Iterator[burnmap.Run]:
        with burnmap.run("agent", budget=1) as r:
            yield r

    steps = agent()
    r = next(steps)

    def worker() -> None:
        with r.attach():
            joined.set()
            release.wait(5)
            seen.append(burnmap.current_run())

    thread = threading.Thread(target=worker)
    thread.start()
    joined.wait(5)
    closer = threading.Thread(target=steps.close)  # as the collector would, elsewhere
    closer.start()
    closer.join()
    release.set()
    thread.join()
    assert seen == [r]


def test_runs_ending_out_of_order_leave_the_live_one_in_scope() -> None:
    """Two generator agents on one thread whose runs end in the other order than they
    began: the live run stays in scope, and an ended one never comes back."""

    def agent(name: str) -> Iterator[burnmap.Run]:
        with burnmap.run(name, budget=1) as r:
            yield r
            yield r

    planner, worker = agent("planner"), agent("worker")
    first = next(planner)
    second = next(worker)
    assert burnmap.current_run() is second and second.parent is first
    for _ in planner:  # the planner ends first
        pass
    assert burnmap.current_run() is second
    for _ in worker:
        pass
    assert burnmap.current_run() is None


def test_an_attach_that_ends_before_a_run_entered_inside_it_never_comes_back() -> None:
    """A worker joins a run, starts a generator agent that enters a run of its own, and
    leaves the attach block first: once the agent's run ends too, the joined run is not
    in scope again (a pool thread's later tasks would be charged to it)."""
    with burnmap.run("job", budget=1) as job:
        pass

    def agent() -> Iterator[burnmap.Run]:
        with burnmap.run("agent", budget=1) as r:
            yield r
            yield r

    def worker() -> list[str | None]:
        with job.attach():
            steps = agent()
            inner = next(steps)
        seen = [burnmap.current_run().job_name if burnmap.current_run() else None]
        for _ in steps:  # the agent's run ends now
            pass
        seen.append(burnmap.current_run().job_name if burnmap.current_run() else None)
        assert inner.parent is job
        return seen

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert pool.submit(worker).result() == ["agent", None]
        assert pool.submit(burnmap.current_run).result() is None
