"""``burnmap wrap``: run an agent program, follow its LLM spend, stop it at its budget.

The supervisor starts the program in its own process group and follows its spend from:

1. **Python children, exact and before the call**: ``inject/sitecustomize.py`` budgets
   every httpx/httpx2 client of every Python process in the tree against a ledger file
   this supervisor owns (one SQLite file in a private temp folder, one standing budget for
   this wrap), and reports each call and refusal to an events file.
2. **Known agent CLIs** (parsers in ``burnmap.wrap.parsers``): Claude Code's OpenTelemetry
   events, Codex / Gemini / aider output.
3. **Generic scanning** of the program's output (estimated).
4. **--proxy**: a loopback metering forwarder (exact and before the call, any language).

When the budget is reached (or a call was refused, or a loop detected) it stops the
program: SIGTERM to its process group and to descendants that left it, a grace period,
then SIGKILL. Its exit status is the program's own (128+n for a signal), or
:data:`EXIT_BUDGET` / :data:`EXIT_LOOP` when burnmap stopped it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import burnmap
from burnmap._core.money import to_micros
from burnmap._core.usage import Usage
from burnmap.ledgers import LimitDef
from burnmap.ledgers.sqlite import SQLiteLedger
from burnmap.run import CallRecord, Run

__all__ = [
    "EXIT_BUDGET",
    "EXIT_LOOP",
    "EXIT_NOT_FOUND",
    "Supervisor",
    "WrapOptions",
    "descendants",
]

log = logging.getLogger("burnmap.wrap")

EXIT_BUDGET = 80
"""Exit status when burnmap stopped the program at its budget."""
EXIT_LOOP = 81
"""Exit status when burnmap stopped the program for a runaway loop."""
EXIT_NOT_FOUND = 127

_INJECT_DIR = Path(__file__).resolve().parent / "inject"


@dataclass
class WrapOptions:
    command: list[str]
    budget: Decimal | None
    job: str = "wrap"
    grace: float = 5.0
    report_json: Path | None = None
    proxy: bool = False
    call_rate_limit: int | None = None
    context_growth_limit: float | None = None
    meter: bool | None = None
    """Live meter on stderr: ``None`` = when stderr is a terminal."""
    scan: bool = True


@dataclass
class _Outcome:
    stopped_for: str | None = None
    reason: str | None = None


def descendants(root: int) -> list[int]:
    """Every live descendant of ``root`` (Linux ``/proc``), whatever its process group."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: fields follow the last ")".
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _python_paths() -> str:
    """Where burnmap and its dependencies live, for a child that cannot import them."""
    import genai_prices
    import httpx
    import httpx2

    roots = {
        str(Path(module.__file__).resolve().parent.parent)
        for module in (burnmap, httpx, httpx2, genai_prices)
        if module.__file__
    }
    return os.pathsep.join(sorted(roots))


class Supervisor:
    def __init__(self, options: WrapOptions, *, stderr: IO[str] | None = None) -> None:
        self.options = options
        self.stderr = stderr or sys.stderr
        self.run: Run = burnmap.run(
            options.job,
            budget=options.budget,
            call_rate_limit=options.call_rate_limit,
            context_growth_limit=options.context_growth_limit,
        )
        self.outcome = _Outcome()
        self.refusals = 0
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp = Path(tempfile.mkdtemp(prefix="burnmap-wrap-"))
        self._events = self._tmp / "events.jsonl"
        self._scope = f"wrap:{uuid.uuid4().hex[:12]}"
        self._ledger = SQLiteLedger(self._tmp / "ledger.db")
        self._seen: set[str] = set()
        self._threads: list[threading.Thread] = []
        self._cleanups: list[Callable[[], None]] = []

    # -- the child's environment --------------------------------------------------------
    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.options.budget is not None:
            self._ledger.set_limit(
                LimitDef(self._scope, to_micros(self.options.budget), None, "UTC")
            )
        if not self.options.proxy:
            paths = [str(_INJECT_DIR)]
            if env.get("PYTHONPATH"):
                paths.append(env["PYTHONPATH"])
            env["PYTHONPATH"] = os.pathsep.join(paths)
            env["BURNMAP_LEDGER"] = self._ledger.url
            env["BURNMAP_SCOPES"] = self._scope
            env["BURNMAP_WRAP_EVENTS"] = str(self._events)
            env["BURNMAP_WRAP_PATHS"] = _python_paths()
        return env

    # -- following spend ----------------------------------------------------------------
    def record(self, record: CallRecord, key: str | None = None) -> None:
        """Count one call (from any source); stop the program if it is over budget or
        looks like a runaway loop."""
        with self._lock:
            if key is not None:
                if key in self._seen:
                    return
                self._seen.add(key)
        verdict = self.run.record(record)
        if verdict is not None:
            self.stop("loop", f"loop detected ({verdict.trigger}): {verdict.message}")
        self._check_budget(record.cost)

    def _check_budget(self, last_cost: Decimal) -> None:
        budget = self.options.budget
        if budget is None:
            return
        spent = self.run.spent
        # Stop when the budget is reached, or when one more call like the last would
        # pass it: for programs burnmap cannot refuse in advance, this keeps the overshoot
        # to the calls already in flight.
        if spent >= budget or (last_cost and spent + last_cost > budget):
            self.stop("budget", f"spent ${spent:.6f} of ${budget:.2f}")

    def refused(self, fields: dict[str, Any]) -> None:
        """A Python child's call was refused before it was sent. The budget is safe, so
        the program gets ``grace`` seconds to wind down by itself (its calls in flight
        finish and are counted) before it is stopped."""
        self.refusals += 1
        trigger = fields.get("trigger")
        if trigger:
            self.stop("loop", f"loop detected ({trigger})", patient=True)
        else:
            self.stop(
                "budget", f"a call was refused: budget {fields.get('scope')} reached", patient=True
            )

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if kind == "call":
            record = CallRecord(
                model=str(event.get("model")),
                provider=str(event.get("provider")),
                endpoint=str(event.get("endpoint")),
                usage=Usage(
                    input_tokens=int(event.get("input_tokens", 0)),
                    output_tokens=int(event.get("output_tokens", 0)),
                    cache_read_tokens=int(event.get("cache_read_tokens", 0)),
                    cache_write_tokens=int(event.get("cache_write_tokens", 0)),
                    cache_write_1h_tokens=int(event.get("cache_write_1h_tokens", 0)),
                    reasoning_tokens=int(event.get("reasoning_tokens", 0)),
                    web_searches=int(event.get("web_searches", 0)),
                ),
                cost=Decimal(str(event.get("cost", "0"))),
                reserved=Decimal(str(event.get("reserved", "0"))),
                estimated=bool(event.get("estimated")),
                streamed=bool(event.get("streamed")),
                started_at=float(event.get("started_at", time.time())),
                duration_seconds=float(event.get("duration_seconds", 0.0)),
                fingerprint=event.get("fingerprint"),
            )
            self.record(record)
        elif kind == "refused":
            self.refused(event)
        elif kind == "inject-failed":
            log.warning("burnmap wrap: budgeting a Python child failed: %s", event.get("error"))

    def _tail_events(self) -> None:
        position = 0
        partial = b""
        while True:
            done = self._stop_event.is_set() or (
                self._proc is not None and self._proc.poll() is not None
            )
            try:
                with open(self._events, "rb") as handle:
                    handle.seek(position)
                    data = handle.read()
            except FileNotFoundError:
                data = b""
            if data:
                position += len(data)
                lines = (partial + data).split(b"\n")
                partial = lines.pop()
                for line in lines:
                    try:
                        self._on_event(json.loads(line))
                    except (ValueError, TypeError):
                        continue
            if done and not data:
                return
            time.sleep(0.02)

    # -- stopping ---------------------------------------------------------------------
    def stop(self, why: str, reason: str, *, patient: bool = False) -> None:
        with self._lock:
            if self.outcome.stopped_for is not None:
                return
            self.outcome.stopped_for = why
            self.outcome.reason = reason
        self.run.stop(f"burnmap wrap stopped the program: {reason}")
        threading.Thread(target=self._terminate, args=(patient,), daemon=True).start()

    def _terminate(self, patient: bool = False) -> None:
        proc = self._proc
        if proc is None:
            return
        if patient:
            deadline = time.monotonic() + self.options.grace
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
        if proc.poll() is not None:
            return
        self._signal_tree(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.options.grace
        while time.monotonic() < deadline:
            if proc.poll() is not None and not descendants(proc.pid):
                return
            time.sleep(0.05)
        self._signal_tree(proc.pid, signal.SIGKILL)

    def _signal_tree(self, pid: int, sig: signal.Signals) -> None:
        family = descendants(pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        for child in family:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, sig)

    # -- running ----------------------------------------------------------------------
    def _thread(self, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        self._threads.append(thread)

    @contextlib.contextmanager
    def _foreground(self, pgid: int) -> Iterator[None]:
        """With a terminal, give the program the foreground (Ctrl-C reaches it)."""
        tty = None
        for stream in (sys.stdin, sys.stdout, sys.stderr):
            with contextlib.suppress(AttributeError, OSError, ValueError):
                if stream.isatty():
                    tty = stream.fileno()
                    break
        if tty is None:
            yield
            return
        previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        try:
            with contextlib.suppress(OSError):
                os.tcsetpgrp(tty, pgid)
            yield
        finally:
            with contextlib.suppress(OSError):
                os.tcsetpgrp(tty, os.getpgrp())
            signal.signal(signal.SIGTTOU, previous)

    def start(self) -> subprocess.Popen[bytes]:
        command = self.options.command
        executable = shutil.which(command[0])
        if executable is None:
            raise FileNotFoundError(command[0])
        self._proc = subprocess.Popen(
            [executable, *command[1:]],
            env=self.child_env(),
            process_group=0,
        )
        self._thread(self._tail_events)
        return self._proc

    def wait(self) -> int:
        proc = self._proc
        assert proc is not None
        forward = self._forward_signals(proc.pid)
        meter = self._meter_enabled()
        try:
            with self._foreground(proc.pid):
                while True:
                    try:
                        status = proc.wait(timeout=0.25)
                        break
                    except subprocess.TimeoutExpired:
                        if meter:
                            self._draw_meter()
        finally:
            forward()
            if meter:
                self.stderr.write("\r\033[K")
        # Descendants still running after the program exited are stopped too.
        if self.outcome.stopped_for is not None:
            for child in descendants(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
        self._stop_event.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._reconcile()
        return status

    def _reconcile(self) -> None:
        """Holds a killed child never settled: charged at their bound, marked estimated
        (the provider may have billed those calls)."""
        if self.options.proxy:
            return
        with contextlib.suppress(Exception):
            self._ledger.reap()
            held = self._ledger.status([self._scope])[0].reserved
            if held:
                cost = Decimal(held) / 1_000_000
                self.run.record(
                    CallRecord(
                        model="(unsettled: the program was stopped mid-call)",
                        provider="-",
                        endpoint="-",
                        usage=Usage(),
                        cost=cost,
                        reserved=cost,
                        estimated=True,
                        streamed=False,
                        started_at=time.time(),
                        duration_seconds=0.0,
                    )
                )

    def _forward_signals(self, pgid: int) -> Callable[[], None]:
        """Without a terminal, SIGINT/SIGTERM/SIGHUP sent to burnmap go to the program."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        saved: dict[int, Any] = {}

        def forward(signum: int, frame: Any) -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signum)

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            saved[sig] = signal.signal(sig, forward)

        def restore() -> None:
            for sig, handler in saved.items():
                signal.signal(sig, handler)

        return restore

    def _meter_enabled(self) -> bool:
        if self.options.meter is not None:
            return self.options.meter
        try:
            return self.stderr.isatty()
        except (AttributeError, ValueError):
            return False

    def _draw_meter(self) -> None:
        spent = self.run.spent
        budget = self.options.budget
        if budget:
            share = spent / budget
            bar = "#" * min(20, int(share * 20))
            warn = "  WARNING: over 80%" if share >= Decimal("0.8") else ""
            line = (
                f"burnmap [{bar:<20}] ${spent:.4f} / ${budget:.2f} "
                f"({self.run.call_count} calls){warn}"
            )
        else:
            line = f"burnmap ${spent:.4f} ({self.run.call_count} calls)"
        self.stderr.write("\r\033[K" + line)
        self.stderr.flush()

    def exit_status(self, status: int) -> int:
        if self.outcome.stopped_for == "budget":
            return EXIT_BUDGET
        if self.outcome.stopped_for == "loop":
            return EXIT_LOOP
        return 128 + (-status) if status < 0 else status

    def finish(self, status: int) -> int:
        code = self.exit_status(status)
        self.run.__exit__(None, None, None)
        report = self.run.report
        self.stderr.write(report.summary() + "\n")
        if self.outcome.stopped_for is not None:
            self.stderr.write(
                f"burnmap wrap: stopped the program ({self.outcome.reason}); exit status {code}\n"
            )
        if self.options.report_json is not None:
            data = report.to_dict()
            data["exit_status"] = code
            data["stopped_by_burnmap"] = self.outcome.stopped_for
            self.options.report_json.write_text(json.dumps(data, indent=2) + "\n")
        self.stderr.flush()
        return code

    def close(self) -> None:
        for cleanup in reversed(self._cleanups):
            with contextlib.suppress(Exception):
                cleanup()
        self._ledger.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def execute(self) -> int:
        """Start, follow, stop if needed, report; returns the exit status to use."""
        self.run.__enter__()
        try:
            self.start()
            return self.finish(self.wait())
        finally:
            self.close()
