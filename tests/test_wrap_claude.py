"""burnmap wrap over the real Claude Code binary, in a runaway loop against a stand-in.

The stand-in answers every call with one more tool call (Claude Code runs it and asks
again), so Claude Code never stops by itself: burnmap must stop it. Claude Code is the
binary bundled in PyPI's ``claude-agent-sdk``; its home is a temporary folder, its API a
loopback :class:`StandIn`, and nothing leaves the machine.

- without ``--proxy`` spend is followed from Claude Code's OpenTelemetry events and its
  session transcript, after each call: the calls in flight when the budget is reached may
  pass it (at most 2 here);
- with ``--proxy`` each call is bounded and reserved before it is forwarded: the call that
  could overspend is refused with 402 and never reaches the stand-in.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from burnmap.standin import Script, StandIn
from burnmap.wrap.supervisor import descendants
from tests.conftest import billed, call_cost

pytestmark = [pytest.mark.wrap, pytest.mark.claude]

TIMEOUT = 60
"""Seconds one wrapped run may take (each takes 5-15 s)."""

# A tool call whose result never changes (the stuck agent), and one whose result always
# does (a busy agent that the loop detector rightly leaves alone: only the budget stops it).
# Each reply streams for ~0.3 s (15 events, 20 ms apart). Real APIs take seconds; a stand-in
# answering in a millisecond lets Claude Code loop every ~60 ms, faster than it writes its
# transcript (~100-150 ms behind), and the calls in flight then depend on the machine's load.
STUCK = Script(
    tool_use={"name": "Bash", "input": {"command": "echo looping", "description": "loop"}},
    output_tokens=300,
    events=10,
    stream_chunk_delay=0.02,
)
BUSY = Script(
    tool_use={"name": "Bash", "input": {"command": "date +%s%N", "description": "clock"}},
    output_tokens=300,
    events=10,
    stream_chunk_delay=0.02,
)
TELEMETRY = {"claude-otel", "claude-transcript"}


def _claude_binary() -> Path | None:
    spec = importlib.util.find_spec("claude_agent_sdk")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "_bundled" / "claude"
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None


CLAUDE = _claude_binary()
if CLAUDE is None:
    pytest.skip(
        "the Claude Code binary is not installed (pip install claude-agent-sdk: it bundles "
        "claude_agent_sdk/_bundled/claude)",
        allow_module_level=True,
    )


def calls_past(standin: StandIn, budget: Decimal) -> int:
    """How many billed calls brought the stand-in's cumulative bill past ``budget``."""
    past = 0
    total = Decimal(0)
    for call in standin.calls:
        total += call_cost(call)
        if total > budget:
            past += 1
    return past


@dataclass
class Wrapped:
    returncode: int
    stdout: str
    stderr: str
    report: dict[str, Any]
    claude_env: dict[str, str]
    """Claude Code's environment, read from /proc while it ran."""
    seconds: float


def _environ(pid: int) -> dict[str, str] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv0 = handle.read().split(b"\0")[0].decode(errors="replace")
        if Path(argv0).name != "claude":
            return None
        with open(f"/proc/{pid}/environ", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {name: value for name, _, value in pairs}


def _watch_claude(pid: int, found: dict[str, str], done: threading.Event) -> None:
    while not done.is_set() and not found:
        for child in descendants(pid):
            env = _environ(child)
            if env is not None:
                found.update(env)
                return
        time.sleep(0.01)


def wrap_claude(
    standin: StandIn, home: Path, *options: str, env: dict[str, str] | None = None
) -> Wrapped:
    """``burnmap wrap OPTIONS -- claude -p "fix the bug"`` with a fresh HOME."""
    report = home / "report.json"
    base = {
        name: value
        for name, value in os.environ.items()
        # The developer's own Claude / telemetry / proxy settings must not change the run.
        if not name.startswith(("OTEL_", "CLAUDE_", "ANTHROPIC_", "BURNMAP_"))
        and name.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    child_env = {
        **base,
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": standin.url,
        "ANTHROPIC_API_KEY": "sk-test",
        "DISABLE_AUTOUPDATER": "1",
        **(env or {}),
    }
    command = [sys.executable, "-m", "burnmap.cli", "wrap", "--report-json", str(report)]
    command += [*options, "--", str(CLAUDE), "-p", "fix the bug"]
    started = time.monotonic()
    proc = subprocess.Popen(
        command,
        env=child_env,
        cwd=home,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    found: dict[str, str] = {}
    done = threading.Event()
    watcher = threading.Thread(target=_watch_claude, args=(proc.pid, found, done), daemon=True)
    watcher.start()
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        for child in descendants(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        proc.kill()
        stdout, stderr = proc.communicate()
        pytest.fail(f"burnmap wrap did not stop Claude Code within {TIMEOUT} s:\n{stderr}")
    finally:
        done.set()
        watcher.join(timeout=5)
    seconds = time.monotonic() - started
    assert report.is_file(), f"no report (exit {proc.returncode}):\n{stderr}"
    return Wrapped(proc.returncode, stdout, stderr, json.loads(report.read_text()), found, seconds)


def summary(capsys: pytest.CaptureFixture[str], name: str, standin: StandIn, run: Wrapped) -> None:
    budget = Decimal(run.report["budget"])
    line = (
        f"\n[claude wrap: {name}] budget ${budget}, exit {run.returncode} in "
        f"{run.seconds:.1f} s: stand-in billed {len(standin.calls)} calls "
        f"${billed(standin.calls):.6f}, burnmap reported {run.report['call_count']} calls "
        f"${Decimal(run.report['total_cost']):.6f}, calls past the budget "
        f"{calls_past(standin, budget)}"
    )
    with capsys.disabled():
        print(line)


def rows_match_billed_calls(run: Wrapped, standin: StandIn) -> None:
    """Every reported call is one the stand-in billed, with the same usage and price."""
    billed_calls = {(c.input_tokens, c.output_tokens): call_cost(c) for c in standin.calls}
    for row in run.report["cost_by_call"]:
        key = (row["input_tokens"], row["output_tokens"])
        assert key in billed_calls, f"reported call {key} was never billed"
        assert Decimal(row["cost"]) == billed_calls[key], row
    keys = [(r["input_tokens"], r["output_tokens"]) for r in run.report["cost_by_call"]]
    assert len(keys) == len(set(keys)), "a call was counted twice"


def test_claude_code_is_stopped_at_its_budget_from_its_telemetry(
    standin: StandIn, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    standin.script = BUSY  # a busy agent: only the budget stops it
    budget = Decimal("0.50")
    run = wrap_claude(standin, tmp_path, "--budget", str(budget))
    summary(capsys, "OpenTelemetry + transcript", standin, run)
    assert run.returncode == 80, run.stderr
    assert run.report["exit_status"] == 80
    assert run.report["stopped_by_burnmap"] == "budget"
    assert "burnmap wrap: stopped the program" in run.stderr
    # Claude Code exported its events to the supervisor's receiver on loopback.
    endpoint = run.claude_env.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "")
    assert endpoint.startswith("http://127.0.0.1:"), run.claude_env
    assert run.claude_env.get("CLAUDE_CODE_ENABLE_TELEMETRY") == "1"

    rows = run.report["cost_by_call"]
    assert rows, run.stderr
    assert {row["endpoint"] for row in rows} <= TELEMETRY
    assert not any(row["estimated"] for row in rows)
    rows_match_billed_calls(run, standin)
    total = Decimal(run.report["total_cost"])
    assert total <= billed(standin.calls)
    assert run.report["call_count"] <= len(standin.calls)
    # Followed after each call, not refused before it: the calls in flight when the budget
    # was reached may pass it, no more.
    assert calls_past(standin, budget) <= 2


def test_with_proxy_the_call_that_would_overspend_is_never_sent(
    standin: StandIn, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Claude Code asks max_tokens=128000 of claude-opus-5-5: each call is bounded at ~$3,
    # so the budget must leave room for one such call (and a few real ones before it).
    standin.script = BUSY
    budget = Decimal("4.00")
    run = wrap_claude(standin, tmp_path, "--budget", str(budget), "--proxy")
    summary(capsys, "--proxy", standin, run)
    assert run.returncode == 80, run.stderr
    assert run.report["stopped_by_burnmap"] == "budget"
    assert run.report["refused_calls"] >= 1
    # Claude Code got the refusal (a 402 with burnmap's reason) instead of an answer...
    assert "402" in run.stdout and "burnmap" in run.stdout, run.stdout
    # ...and the stand-in never saw that request: every request it received was billed.
    assert len(standin.requests) == len(standin.calls) > 1
    assert calls_past(standin, budget) == 0
    assert billed(standin.calls) <= budget
    # Counted once, exactly, at the proxy.
    sources = Counter(row["endpoint"] for row in run.report["cost_by_call"])
    assert Decimal(run.report["total_cost"]) == billed(standin.calls), f"rows by source: {sources}"
    assert run.report["call_count"] == len(standin.calls)
    rows_match_billed_calls(run, standin)


def test_the_users_own_otel_setting_is_kept_and_the_transcript_followed(
    standin: StandIn, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    standin.script = BUSY
    budget = Decimal("0.50")
    run = wrap_claude(
        standin, tmp_path, "--budget", str(budget), env={"OTEL_LOGS_EXPORTER": "none"}
    )
    summary(capsys, "OTEL_LOGS_EXPORTER=none, transcript only", standin, run)
    # Nothing of the user's telemetry setup was overridden or added.
    assert run.claude_env.get("OTEL_LOGS_EXPORTER") == "none", run.claude_env
    assert "CLAUDE_CODE_ENABLE_TELEMETRY" not in run.claude_env
    assert not any(
        name.startswith("OTEL_EXPORTER_OTLP") or name == "OTEL_LOGS_EXPORT_INTERVAL"
        for name in run.claude_env
    )
    assert run.returncode == 80, run.stderr
    rows = run.report["cost_by_call"]
    assert rows, run.stderr
    assert {row["endpoint"] for row in rows} == {"claude-transcript"}
    rows_match_billed_calls(run, standin)
    assert Decimal(run.report["total_cost"]) <= billed(standin.calls)
    assert calls_past(standin, budget) <= 2


def test_a_stuck_claude_code_is_stopped_as_a_loop(
    standin: StandIn, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The same Bash call answered by the same output every turn, while the history grows:
    # the repeat trigger reads it from Claude Code's transcript, well before the budget.
    standin.script = STUCK
    run = wrap_claude(standin, tmp_path, "--budget", "5.00")
    summary(capsys, "stuck loop", standin, run)
    assert run.returncode == 81, run.stderr
    assert run.report["stopped_by_burnmap"] == "loop"
    assert "loop detected (repeat)" in run.stderr
    assert len(standin.calls) <= 10
