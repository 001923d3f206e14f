"""Runaway-loop detection against the trace corpus in ``tests/fixtures/traces``.

Every trace is replayed through ``LoopGuard()`` as ``Run`` drives it: ``check`` before each
call (its time and request fingerprint), then ``started`` and ``settled`` (its input tokens
and cost). Healthy traces must never fire; each runaway trace must fire, with the trigger
for its shape, within the calls the table in ``docs/loops.md`` states. That table is
generated here: ``python tests/test_loops.py --write`` rewrites it after a change.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import sys
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from itertools import pairwise
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from burnmap._core.loops import (
    DEFAULT_CALL_RATE_LIMIT,
    DEFAULT_CONTEXT_GROWTH_LIMIT,
    DEFAULT_REPEAT_LIMIT,
    GROWTH_FLOOR,
    GROWTH_STEPS,
    LoopGuard,
    request_fingerprint,
)

TRACES = Path(__file__).parent / "fixtures" / "traces"
DOCS = Path(__file__).parents[1] / "docs" / "loops.md"
START, END = "<!-- traces-table -->", "<!-- /traces-table -->"

HEALTHY = {
    "coding_agent": "Claude Code session: a different tool call each turn",
    "busy_agent": "Codex running one test per turn: same tool, new command each time",
    "batch_200_per_min": "independent single-turn calls, 200/min, bursts of 20 at once",
    "long_chat": "chat with a long history, a turn every 20-60 s",
}
# name: (shape, the trigger that must stop it, at most this many calls let through)
RUNAWAY = {
    "identical_retry": ("byte-identical request every 0.5 s", "repeat", 5),
    "stuck_tool_loop": ("Claude Code stuck: same Bash call, same result", "repeat", 6),
    "context_doubling": ("input doubles each turn from 8k", "context_growth", 5),
    "tight_hammering": ("distinct small requests, 25 a second", "call_rate", 60),
}
LIMITS = {
    "call_rate": ("call_rate_limit", DEFAULT_CALL_RATE_LIMIT),
    "context_growth": ("context_growth_limit", DEFAULT_CONTEXT_GROWTH_LIMIT),
    "repeat": ("repeat_limit", DEFAULT_REPEAT_LIMIT),
}
ALL_OFF: dict[str, Any] = {name: None for name, _ in LIMITS.values()}


@dataclass(frozen=True)
class Fired:
    trigger: str
    after: int
    """Calls let through before the refused one."""


@cache
def load(name: str) -> tuple[dict[str, Any], ...]:
    with (TRACES / f"{name}.jsonl").open() as lines:
        return tuple(json.loads(line) for line in lines)


def replay(calls: tuple[dict[str, Any], ...], **limits: Any) -> Fired | None:
    """The first refusal ``LoopGuard(**limits)`` makes on ``calls``, if any."""
    guard = LoopGuard(**limits)
    for n, call in enumerate(calls):
        fingerprint = request_fingerprint(call["request"])
        verdict = guard.check(call["t"], fingerprint)
        if verdict is not None:
            return Fired(verdict.trigger, n)
        guard.started(call["t"], fingerprint)
        guard.settled(call["t"], call["input_tokens"], Decimal(call["cost"]), fingerprint)
    return None


def only(trigger: str) -> dict[str, Any]:
    """Limits with every trigger off but ``trigger``, at its default."""
    name, default = LIMITS[trigger]
    return {**ALL_OFF, name: default}


def _span(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def traces_table() -> str:
    """The table docs/loops.md shows between its traces-table markers."""
    header = (
        f"| trace | shape | call_rate ({DEFAULT_CALL_RATE_LIMIT}/min) "
        f"| context_growth ({DEFAULT_CONTEXT_GROWTH_LIMIT:g}x) | repeat ({DEFAULT_REPEAT_LIMIT}) "
        "| first trigger fired, after N calls |"
    )
    lines = [header, "| --- | --- | --- | --- | --- | --- |"]
    shapes = {name: f"healthy: {shape}" for name, shape in HEALTHY.items()}
    shapes |= {name: f"runaway: {shape}" for name, (shape, _, _) in RUNAWAY.items()}
    for name, shape in shapes.items():
        calls = load(name)
        inputs = [call["input_tokens"] for call in calls]
        stats = (
            f"{len(calls)} calls in {_span(calls[-1]['t'])}, "
            f"input {min(inputs) / 1000:.1f}k-{max(inputs) / 1000:.1f}k"
        )
        cells = [f"`{name}`", f"{shape} ({stats})"]
        for trigger in LIMITS:
            fired = replay(calls, **only(trigger))
            cells.append("no" if fired is None else f"after {fired.after} calls")
        fired = replay(calls)
        cells.append("none" if fired is None else f"`{fired.trigger}`, after {fired.after} calls")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def documented_table() -> str:
    text = DOCS.read_text()
    return text[text.index(START) + len(START) : text.index(END)].strip("\n") + "\n"


@cache
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_traces", TRACES / "make_traces.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the corpus ------------------------------------------------------------------------------


def test_corpus_is_what_the_generator_writes() -> None:
    make = generator()
    assert set(make.TRACES) == set(HEALTHY) | set(RUNAWAY)
    for name in make.TRACES:
        assert (TRACES / f"{name}.jsonl").read_text() == make.render(name), (
            f"{name}.jsonl is stale: run python tests/fixtures/traces/make_traces.py"
        )


@pytest.mark.parametrize("name", [*HEALTHY, *RUNAWAY])
def test_trace_is_well_formed(name: str) -> None:
    assert (TRACES / f"{name}.jsonl").stat().st_size < 200_000
    calls = load(name)
    times = [call["t"] for call in calls]
    assert times == sorted(times)
    assert 0 <= times[0] < 1
    for call in calls:
        assert set(call) == {"t", "input_tokens", "output_tokens", "cost", "request"}
        assert call["input_tokens"] > 0
        assert call["output_tokens"] > 0
        assert Decimal(call["cost"]) > 0
        assert request_fingerprint(call["request"]) is not None


def test_healthy_traces_have_the_stated_shapes() -> None:
    coding = load("coding_agent")
    gaps = [b["t"] - a["t"] for a, b in pairwise(coding)]
    assert len(coding) >= 60
    assert min(gaps) >= 2 and max(gaps) <= 10
    assert coding[0]["input_tokens"] < 13_000 and coding[-1]["input_tokens"] > 130_000
    batch = load("batch_200_per_min")
    assert len(batch) >= 400
    per_minute = sum(1 for call in batch if call["t"] < 60)
    assert 190 <= per_minute <= 215
    assert max(sum(1 for c in batch if 0 <= c["t"] - call["t"] < 0.1) for call in batch) >= 20
    assert all(len(call["request"]["messages"]) == 2 for call in batch)  # single-turn
    chat = load("long_chat")
    assert chat[0]["input_tokens"] >= 95_000
    assert all(20 <= b["t"] - a["t"] <= 60 for a, b in pairwise(chat))


def _tool_id(request: dict[str, Any]) -> str:
    if "messages" in request:  # Anthropic: the assistant's tool_use block
        return str(request["messages"][-2]["content"][-1]["id"])
    return str(request["input"][-1]["call_id"])  # Responses: the function call's id


@pytest.mark.parametrize("name", ["coding_agent", "busy_agent", "stuck_tool_loop"])
def test_tool_call_ids_differ_per_call(name: str) -> None:
    calls = load(name)[1:]
    assert len({_tool_id(call["request"]) for call in calls}) == len(calls)


def test_stuck_loop_grows_by_one_turn_and_repeats_its_tail() -> None:
    calls = load("stuck_tool_loop")[1:]
    inputs = [call["input_tokens"] for call in calls]
    assert all(b > a for a, b in pairwise(inputs))
    assert len({json.dumps(call["request"]) for call in calls}) == len(calls)
    assert len({request_fingerprint(call["request"]) for call in calls}) == 1


def test_identical_retry_is_byte_identical() -> None:
    assert len({json.dumps(call["request"]) for call in load("identical_retry")}) == 1


# -- the defaults against the corpus ---------------------------------------------------------


@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_traces_never_fire(name: str) -> None:
    assert replay(load(name)) is None


@pytest.mark.parametrize("name", RUNAWAY)
def test_runaway_traces_fire_with_their_trigger(name: str) -> None:
    _, trigger, within = RUNAWAY[name]
    fired = replay(load(name))
    assert fired is not None
    assert fired.trigger == trigger
    assert fired.after <= within
    assert replay(load(name), **only(trigger)) == fired  # that trigger alone stops it


def test_docs_table_is_current() -> None:
    assert documented_table() == traces_table(), (
        "docs/loops.md's traces table is stale: run python tests/test_loops.py --write"
    )


# -- triggers --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RUNAWAY)
def test_each_trigger_can_be_disabled(name: str) -> None:
    _, trigger, _ = RUNAWAY[name]
    limit_name, _ = LIMITS[trigger]
    fired = replay(load(name), **{limit_name: None})
    assert fired is None or fired.trigger != trigger
    assert replay(load(name), **ALL_OFF) is None


def test_all_triggers_off_means_inactive() -> None:
    assert not LoopGuard(**ALL_OFF).active
    assert LoopGuard().active
    for trigger in LIMITS:
        assert LoopGuard(**only(trigger)).active


def test_spend_rate_is_off_by_default_and_fires_when_set() -> None:
    calls = load("context_doubling")
    assert replay(calls) == Fired("context_growth", 5)
    assert replay(calls, **ALL_OFF) is None
    assert replay(calls, **ALL_OFF, spend_rate_limit=Decimal("0.10")) == Fired("spend_rate", 3)


def test_call_rate_limit_per_minute_without_bursts() -> None:
    guard = LoopGuard(**only("call_rate"))
    for n in range(DEFAULT_CALL_RATE_LIMIT):
        now = n * 0.09  # 11 a second: under the burst rule, over 600 in a minute
        assert guard.check(now) is None
        guard.started(now)
    verdict = guard.check(DEFAULT_CALL_RATE_LIMIT * 0.09)
    assert verdict is not None and verdict.trigger == "call_rate"
    assert guard.check(60.0) is None  # the first call has left the window


def test_a_refused_growth_stays_refused() -> None:
    guard = LoopGuard(**only("context_growth"))
    for tokens in (8_000, 16_000, 32_000, 64_000, 128_000):
        guard.settled(0.0, tokens, Decimal(0))
    assert guard.check(1.0) is not None
    assert guard.check(2.0) is not None  # nothing settled since: the same verdict


# -- the fingerprint -------------------------------------------------------------------------


def _tail_call(name: str, index: int) -> dict[str, Any]:
    return copy.deepcopy(load(name)[index]["request"])


def _retag(request: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    return json.loads(json.dumps(request).replace(old, new))


def test_fingerprint_ignores_ids_and_cache_control() -> None:
    request = _tail_call("coding_agent", 20)
    tool_id = request["messages"][-2]["content"][-1]["id"]
    other = _retag(request, tool_id, "toolu_01SomethingElseEntirely")
    for message in other["messages"]:
        for block in message["content"] if isinstance(message["content"], list) else []:
            block.pop("cache_control", None)
    other["messages"][-2]["content"][-1]["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    assert other != request
    assert request_fingerprint(other) == request_fingerprint(request)

    codex = _tail_call("busy_agent", 20)
    call_id = codex["input"][-1]["call_id"]
    assert request_fingerprint(_retag(codex, call_id, "call_other")) == request_fingerprint(codex)


def test_fingerprint_reads_only_model_and_last_two_turns() -> None:
    request = _tail_call("coding_agent", 20)
    longer = copy.deepcopy(request)
    longer["messages"][1:1] = _tail_call("coding_agent", 10)["messages"][-2:]
    longer["max_tokens"] = 1024
    assert request_fingerprint(longer) == request_fingerprint(request)
    assert request_fingerprint({**request, "model": "claude-opus-4-1"}) != request_fingerprint(
        request
    )


def test_fingerprint_distinguishes_tool_inputs_and_results() -> None:
    request = _tail_call("stuck_tool_loop", 5)
    base = request_fingerprint(request)
    other_input = copy.deepcopy(request)
    other_input["messages"][-2]["content"][-1]["input"]["command"] = "echo hello again"
    other_result = copy.deepcopy(request)
    other_result["messages"][-1]["content"][0]["content"] = "hello\n"
    assert len({base, request_fingerprint(other_input), request_fingerprint(other_result)}) == 3


def test_busy_agent_same_output_different_commands_differ() -> None:
    by_output: dict[str, set[str | None]] = {}
    for call in load("busy_agent")[1:]:
        output = call["request"]["input"][-1]["output"]
        by_output.setdefault(output, set()).add(request_fingerprint(call["request"]))
    repeated = {output: fps for output, fps in by_output.items() if len(fps) > 1}
    assert repeated  # many tests print the very same "1 passed in 0.4s"
    calls = load("busy_agent")[1:]
    assert len({request_fingerprint(call["request"]) for call in calls}) == len(calls)


# -- growth, for any sequence ----------------------------------------------------------------


@given(
    limit=st.sampled_from([DEFAULT_CONTEXT_GROWTH_LIMIT, 1.2, 2.0, 3.0]),
    start=st.integers(1, 400_000),
    factors=st.lists(st.floats(0.01, 1.0), min_size=1, max_size=80),
)
def test_growth_below_the_limit_never_fires(limit: float, start: int, factors: list[float]) -> None:
    """Each call's input below ``limit`` times the one before: never a runaway, whatever
    the sizes (``factors`` scale the allowed growth, 1.0 = just under the limit)."""
    guard = LoopGuard(**{**ALL_OFF, "context_growth_limit": limit})
    size = start
    for n, factor in enumerate(factors):
        assert guard.check(float(n)) is None
        guard.settled(float(n), size, Decimal(0))
        below = math.ceil(size * limit) - 1  # the largest int under size * limit
        size = max(1, min(below, round(size * limit * factor)))
    assert guard.check(float(len(factors))) is None


@given(
    start=st.integers(1, 50_000),
    steps=st.lists(st.floats(DEFAULT_CONTEXT_GROWTH_LIMIT, 4.0), min_size=1, max_size=12),
)
def test_sustained_growth_past_the_floor_fires(start: int, steps: list[float]) -> None:
    """``GROWTH_STEPS`` calls in a row each at least the limit times the one before, the
    last past ``GROWTH_FLOOR``: refused before the next call."""
    guard = LoopGuard(**only("context_growth"))
    sizes = [start]
    for factor in steps:
        sizes.append(int(sizes[-1] * factor) + 1)
    for n, size in enumerate(sizes):
        verdict = guard.check(float(n))
        assert (verdict is not None) == (n > GROWTH_STEPS and sizes[n - 1] >= GROWTH_FLOOR)
        if verdict is not None:
            assert verdict.trigger == "context_growth"
            return
        guard.settled(float(n), size, Decimal(0))


def _write_docs_table() -> None:
    text = DOCS.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    DOCS.write_text(f"{head}{START}\n{traces_table()}{END}{tail}")


def test_a_batch_fanning_out_is_not_a_burst() -> None:
    guard = LoopGuard(**only("call_rate"))
    for n in range(200):  # 200 calls started together, each while others are in flight
        assert guard.check(0.001 * n) is None
        guard.started(0.001 * n, concurrent=n > 0)
    assert guard.check(0.5) is None


if __name__ == "__main__":
    if "--write" in sys.argv:
        _write_docs_table()
    print(traces_table(), end="")
